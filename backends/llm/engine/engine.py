"""LLMEngine: one engine thread that loops schedule -> forward -> sample -> detokenize -> emit,
and the asyncio-facing `generate()` that feeds it.

Threads: the engine thread owns the model, the KV cache, the scheduler and every Request. Other
threads talk to it through an inbox (new requests, aborts) guarded by a lock, and it answers
through per-request asyncio queues, one `loop.call_soon_threadsafe` per loop per step.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trident.backends.llm.engine.detokenizer import IncrementalDetokenizer
from trident.backends.llm.engine.errors import (
    EngineOverloaded,
    EngineStopped,
    InvalidSamplingParams,
    PromptTooLong,
)
from trident.backends.llm.engine.kv_cache import KVCacheManager
from trident.backends.llm.engine.loader import LoadedModel, from_transformers, load_model_dir
from trident.backends.llm.engine.metrics import EngineMetrics
from trident.backends.llm.engine.models import (
    CausalLM,
    ModelArch,
    ModelKind,
    ShardSpec,
    build_model,
)
from trident.backends.llm.engine.outputs import (
    EngineStats,
    FinishReason,
    RequestOutput,
    TokenLogprob,
    TopLogprob,
)
from trident.backends.llm.engine.params import EngineConfig, SamplingParams
from trident.backends.llm.engine.request import Request
from trident.backends.llm.engine.resources import default_num_threads, resolve_dtype, size_pool
from trident.backends.llm.engine.runner import ModelRunner
from trident.backends.llm.engine.sampler import Sampler, SamplingRow
from trident.backends.llm.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput

log = logging.getLogger(__name__)

#: Longest request id accepted (ids come from clients).
MAX_REQUEST_ID_CHARS = 256


@dataclass
class _Sink:
    """Where a request's outputs go, and its per-request helpers."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | BaseException]
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator | None
    stop_ids: frozenset[int]
    eos_ids: tuple[int, ...]


def _deliver(items: list[tuple[asyncio.Queue[Any], RequestOutput | BaseException]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


class LLMEngine:
    """A decoder-only LM served with continuous batching over a paged KV cache.

    Build with `from_model_dir`, call `start()`, then `generate()` from an asyncio loop.
    """

    def __init__(
        self,
        model: CausalLM,
        tokenizer: Any,
        config: EngineConfig,
        model_name: str,
        eos_token_ids: Sequence[int] = (),
    ) -> None:
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self._model_name = model_name
        arch = model.arch
        self._eos = tuple(dict.fromkeys(eos_token_ids))
        self.block_size = config.block_size
        self.num_blocks = size_pool(config, model)
        max_len = config.max_model_len or arch.max_position
        if arch.kind is ModelKind.GPT2 and max_len > arch.max_position:
            # Learned position embeddings stop at n_positions; rotary ones extrapolate.
            raise InvalidSamplingParams(
                "max_model_len", f"GPT-2 models have {arch.max_position} positions at most"
            )
        pool_tokens = self.num_blocks * self.block_size
        if max_len > pool_tokens:
            log.warning(
                "max_model_len %d is more than the KV pool holds; using %d", max_len, pool_tokens
            )
            max_len = pool_tokens
        self.max_model_len = max_len
        self.kv = KVCacheManager(self.num_blocks, self.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                max_model_len=max_len,
                long_prefill_token_threshold=config.long_prefill_token_threshold,
                max_waiting=config.max_waiting,
            ),
            self.kv,
        )
        self.runner = ModelRunner(
            model, self.num_blocks, self.block_size, max(max_len, config.max_num_batched_tokens)
        )
        self.sampler = Sampler(model.device)
        self.metrics = EngineMetrics(max_len, config.max_num_batched_tokens)
        self._lock = threading.Lock()
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._num_inbox_adds = 0
        self._active_ids: set[str] = set()
        self._requests: dict[str, Request] = {}
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stopped = False
        self._num_steps = 0
        self._peak_blocks = 0
        self._peak_slot_usage = 0.0
        self._slot_usage_at_peak = 0.0
        self._parallel: Any = None  # the TensorParallelGroup when tensor_parallel_size > 1

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_model_dir(
        cls, path: Path, config: EngineConfig, gguf_file: str | None = None
    ) -> LLMEngine:
        """Load a Hugging Face folder (config.json, *.safetensors, tokenizer files), or the GGUF
        file `gguf_file` inside `path` (dequantized on load). Does not start the thread."""
        folder = Path(path)
        return cls._from_loaded(load_model_dir(folder, gguf_file), config, (folder, gguf_file))

    @classmethod
    def from_transformers(
        cls, hf_model: Any, tokenizer: Any, config: EngineConfig, name: str = "model"
    ) -> LLMEngine:
        """Build from a transformers causal LM already in memory (its state dict and config;
        the engine runs its own layers). Does not start the thread."""
        return cls._from_loaded(from_transformers(hf_model, tokenizer, name), config)

    @classmethod
    def _from_loaded(
        cls,
        loaded: LoadedModel,
        config: EngineConfig,
        source: tuple[Path, str | None] | None = None,
    ) -> LLMEngine:
        world = config.tensor_parallel_size
        if world > 1 and source is None:
            raise InvalidSamplingParams(
                "tensor_parallel_size", "tensor parallelism needs a model folder to load from"
            )
        dtype = resolve_dtype(config)
        device = torch.device(config.device)
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda:0")  # rank r uses cuda:r
        max_positions = config.max_model_len or loaded.arch.max_position
        shard = ShardSpec(0, world)
        model = build_model(loaded.arch, loaded.state, dtype, device, max_positions, shard)
        engine = cls(model, loaded.tokenizer, config, loaded.name, loaded.eos_token_ids)
        if world > 1:
            from trident.backends.llm.engine.parallel import (
                ShardLaunch,
                TensorParallelGroup,
                init_method,
            )

            assert source is not None
            group = TensorParallelGroup(
                ShardLaunch(
                    folder=source[0],
                    gguf_file=source[1],
                    dtype=dtype,
                    device_type=device.type,
                    max_positions=max_positions,
                    num_blocks=engine.num_blocks,
                    block_size=engine.block_size,
                    max_len=engine.runner.max_len,
                    world_size=world,
                    init_method=init_method(),
                )
            )
            engine.runner.before_forward = group.before_forward
            engine._parallel = group
        return engine

    # -- properties ---------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The model's name (its folder name, or the GGUF file's stem)."""
        return self._model_name

    @property
    def context_length(self) -> int:
        """max_model_len: the longest prompt + output this engine accepts."""
        return self.max_model_len

    @property
    def eos_token_ids(self) -> list[int]:
        """Token ids that end generation unless ignore_eos."""
        return list(self._eos)

    @property
    def arch(self) -> ModelArch:
        return self.model.arch

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread (idempotent)."""
        with self._lock:
            if self._stopped:
                raise EngineStopped("the engine was shut down")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Stop the thread; pending requests finish with finish_reason "abort"."""
        with self._lock:
            self._stopping = True
            self._stopped = True
            thread = self._thread
        self._wakeup.set()
        if thread is not None:
            thread.join()
        else:
            self._abort_everything()
        if self._parallel is not None:
            self._parallel.close()

    # -- requests -----------------------------------------------------------------------------
    def _make_request(
        self, request_id: str, prompt: str | list[int], params: SamplingParams
    ) -> Request:
        if not isinstance(request_id, str) or not request_id:
            raise InvalidSamplingParams("request_id", "must be a non-empty string")
        if len(request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidSamplingParams("request_id", f"longer than {MAX_REQUEST_ID_CHARS}")
        if not isinstance(params, SamplingParams):
            raise InvalidSamplingParams("params", "expected SamplingParams")
        params.validate()
        if isinstance(prompt, str):
            if len(prompt) > 64 * self.max_model_len:
                raise PromptTooLong(f"prompt of {len(prompt)} characters is too long")
            ids = list(self.tokenizer.encode(prompt))
        elif isinstance(prompt, list):
            vocab = self.arch.vocab_size
            if len(prompt) >= self.max_model_len:
                raise PromptTooLong(
                    f"prompt of {len(prompt)} tokens leaves no room to generate within "
                    f"max_model_len {self.max_model_len}"
                )
            for t in prompt:
                if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
                    raise InvalidSamplingParams("prompt", f"token ids must be ints in [0, {vocab})")
            ids = list(prompt)
        else:
            raise InvalidSamplingParams("prompt", "expected a string or a list of token ids")
        if not ids:
            raise InvalidSamplingParams("prompt", "must not be empty")
        if len(ids) >= self.max_model_len:
            raise PromptTooLong(
                f"prompt of {len(ids)} tokens leaves no room to generate within max_model_len "
                f"{self.max_model_len}"
            )
        return Request(
            request_id=request_id,
            prompt_token_ids=ids,
            params=params,
            arrival_time=time.monotonic(),
            max_output_tokens=min(params.max_tokens, self.max_model_len - len(ids)),
        )

    async def generate(
        self, request_id: str, prompt: str | list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        """Stream one request's outputs; the last has finished=True.

        Raises EngineOverloaded, PromptTooLong or InvalidSamplingParams before yielding anything.
        Cancelling the consuming task, or aclose() on the iterator, aborts the request: its
        blocks are freed within one engine step."""
        request = self._make_request(request_id, prompt, params)
        queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator(device=self.model.device)
            generator.manual_seed(params.seed)
        stop_ids = frozenset(params.stop_token_ids)
        eos_ids = () if params.ignore_eos else self._eos
        request.sink = _Sink(
            loop=asyncio.get_running_loop(),
            queue=queue,
            detokenizer=IncrementalDetokenizer(
                self.tokenizer,
                request.prompt_token_ids,
                params.stop,
                params.include_stop_str_in_output,
            ),
            generator=generator,
            stop_ids=stop_ids,
            eos_ids=eos_ids,
        )
        self._submit(request)
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self.abort(request_id)

    def _submit(self, request: Request) -> None:
        with self._lock:
            if self._stopped:
                raise EngineStopped("the engine was shut down")
            if request.request_id in self._active_ids:
                raise InvalidSamplingParams("request_id", "a request with this id is running")
            waiting = self._num_inbox_adds + len(self.scheduler.waiting)
            if waiting >= self.config.max_waiting:
                raise EngineOverloaded(
                    f"{waiting} requests are waiting already (max_waiting "
                    f"{self.config.max_waiting})"
                )
            self._active_ids.add(request.request_id)
            self._num_inbox_adds += 1
            self._inbox.append(("add", request))
        self._wakeup.set()

    def abort(self, request_id: str) -> None:
        """Abort a request from any thread; unknown or finished ids are ignored."""
        with self._lock:
            if request_id not in self._active_ids:
                return
            self._inbox.append(("abort", request_id))
        self._wakeup.set()

    def stats(self) -> EngineStats:
        """Gauges: running, waiting, KV blocks, prefix cache, preemptions, peak slot use."""
        pool = self.kv.pool
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting) + self._num_inbox_adds,
            kv_blocks_used=pool.num_used,
            kv_blocks_total=pool.num_blocks,
            kv_usage=pool.num_used / pool.num_blocks,
            prefix_cache_queries=self.kv.prefix_queries,
            prefix_cache_hits=self.kv.prefix_hits,
            num_preemptions=self.scheduler.num_preemptions,
            peak_kv_blocks_used=self._peak_blocks,
            peak_slot_usage=self._peak_slot_usage,
            slot_usage_at_peak_blocks=self._slot_usage_at_peak,
            num_steps=self._num_steps,
        )

    # -- the engine thread --------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_num_threads(self.config.num_threads or default_num_threads())
        try:
            with torch.inference_mode():
                while True:
                    self._drain_inbox()
                    if self._stopping:
                        break
                    if not self.scheduler.has_work:
                        self._wakeup.wait()
                        self._wakeup.clear()
                        continue
                    try:
                        self.step()
                    except Exception as exc:  # a model failure fails its step's requests
                        log.exception("LLM engine step failed")
                        self._fail_running(exc)
        finally:
            self._abort_everything()

    def _drain_inbox(self) -> None:
        with self._lock:
            items = list(self._inbox)
            self._inbox.clear()
        out: list[tuple[Request, RequestOutput | BaseException]] = []
        for kind, value in items:
            if kind == "add":
                request: Request = value
                with self._lock:
                    self._num_inbox_adds -= 1
                try:
                    self.scheduler.add_request(request)
                except EngineOverloaded as exc:
                    self._forget(request)
                    out.append((request, exc))
                    continue
                self._requests[request.request_id] = request
            else:
                found = self._requests.get(value)
                if found is not None and not found.finished:
                    self.scheduler.finish(found, FinishReason.ABORT.value)
                    out.append((found, self._final_output(found, [], [])))
                    self._finished(found)
        self._emit(out)

    def _forget(self, request: Request) -> None:
        with self._lock:
            self._active_ids.discard(request.request_id)
        self._requests.pop(request.request_id, None)

    def _finished(self, request: Request) -> None:
        now = time.monotonic()
        self.metrics.observe_finished(
            request.finish_reason or "abort", now - request.arrival_time, request.num_output_tokens
        )
        self._forget(request)

    def _emit(self, items: list[tuple[Request, RequestOutput | BaseException]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
        for request, item in items:
            sink: _Sink = request.sink
            by_loop.setdefault(sink.loop, []).append((sink.queue, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the caller's loop is closed: nobody is listening
                pass

    def _final_output(
        self, request: Request, new_ids: list[int], logprobs: list[TokenLogprob]
    ) -> RequestOutput:
        sink: _Sink = request.sink
        finished = request.finished
        text = sink.detokenizer.take_delta(finished) if request.finish_reason != "abort" else ""
        return RequestOutput(
            request_id=request.request_id,
            new_token_ids=new_ids,
            new_text=text,
            finished=finished,
            finish_reason=request.finish_reason if finished else None,
            stop_reason=request.stop_reason if finished else None,
            num_prompt_tokens=request.num_prompt_tokens,
            num_output_tokens=request.num_output_tokens,
            new_logprobs=logprobs,
            num_cached_tokens=request.num_cached_tokens,
        )

    def step(self) -> SchedulerOutput:
        """Run one engine step (engine thread only; public for tests that drive it by hand)."""
        plan = self.scheduler.schedule()
        now = time.monotonic()
        for request in plan.admitted:
            if request.first_scheduled_time is None:
                request.first_scheduled_time = now
                self.metrics.observe_scheduled(
                    now - request.arrival_time, request.num_prompt_tokens
                )
                if self.kv.enable_prefix_caching:
                    self.metrics.count_prefix_cache(request.num_tokens, request.num_cached_tokens)
        if plan.preempted:
            self.metrics.count_preemptions(len(plan.preempted))
        if plan.is_empty:
            return plan
        logits, rows = self.runner.execute(plan.scheduled)
        self.scheduler.on_step_done(plan)
        self._num_steps += 1
        self._record_slot_usage()
        sampling = [plan.scheduled[i].request for i in rows]
        sample_rows = [
            SamplingRow(
                params=r.params,
                token_ids=r.token_ids,
                num_prompt_tokens=r.num_prompt_tokens,
                num_output_tokens=r.num_output_tokens,
                stop_ids=(*r.sink.eos_ids, *r.sink.stop_ids),
                generator=r.sink.generator,
            )
            for r in sampling
        ]
        result = self.sampler.sample(logits, sample_rows) if sampling else None
        now = time.monotonic()
        ttfts: list[float] = []
        itls: list[float] = []
        out: list[tuple[Request, RequestOutput | BaseException]] = []
        for i, request in enumerate(sampling):
            assert result is not None
            token = result.token_ids[i]
            request.token_ids.append(token)
            if request.first_token_time is None:
                request.first_token_time = now
                ttfts.append(now - request.arrival_time)
            elif request.last_token_time is not None:
                itls.append(now - request.last_token_time)
            request.last_token_time = now
            logprobs = self._logprobs(request, token, result.logprobs[i], result.top[i])
            self._check_stop(request, token)
            out.append((request, self._final_output(request, [token], logprobs)))
            if request.finished:
                self._finished(request)
        # Metrics first: a client that sees its last output also sees it counted.
        self.metrics.observe_step(
            num_tokens=plan.num_tokens,
            new_generation_tokens=len(sampling),
            ttfts=ttfts,
            itls=itls,
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv_usage=self.kv.usage(),
        )
        self._emit(out)
        return plan

    def _logprobs(
        self,
        request: Request,
        token: int,
        logprob: float | None,
        top: tuple[list[int], list[float]] | None,
    ) -> list[TokenLogprob]:
        if logprob is None:
            return []
        detok = request.sink.detokenizer
        alternatives = []
        if top is not None:
            alternatives = [
                TopLogprob(tid, lp, detok.token_text(tid)) for tid, lp in zip(top[0], top[1])
            ]
        return [TokenLogprob(token, logprob, detok.token_text(token), alternatives)]

    def _check_stop(self, request: Request, token: int) -> None:
        sink: _Sink = request.sink
        if token in sink.stop_ids:
            self.scheduler.finish(request, FinishReason.STOP.value, token)
            return
        if token in sink.eos_ids:
            self.scheduler.finish(request, FinishReason.STOP.value, None)
            return
        stop_string = sink.detokenizer.add_token(token)
        if stop_string is not None:
            self.scheduler.finish(request, FinishReason.STOP.value, stop_string)
        elif request.num_output_tokens >= request.max_output_tokens:
            self.scheduler.finish(request, FinishReason.LENGTH.value)

    def _record_slot_usage(self) -> None:
        live, held = self.scheduler.live_token_slots()
        used = self.kv.pool.num_used
        ratio = live / held if held else 0.0
        self._peak_slot_usage = max(self._peak_slot_usage, ratio)
        if used >= self._peak_blocks:
            self._peak_blocks = used
            self._slot_usage_at_peak = ratio

    def _fail_running(self, exc: Exception) -> None:
        out: list[tuple[Request, RequestOutput | BaseException]] = []
        for request in list(self.scheduler.running):
            self.scheduler.finish(request, FinishReason.ABORT.value)
            out.append((request, RuntimeError(f"the engine step failed: {exc}")))
            self._finished(request)
        self._emit(out)

    def _abort_everything(self) -> None:
        with self._lock:
            self._stopped = True
            items = list(self._inbox)
            self._inbox.clear()
            self._num_inbox_adds = 0
        out: list[tuple[Request, RequestOutput | BaseException]] = []
        pending = [v for k, v in items if k == "add"]
        pending += list(self.scheduler.running) + list(self.scheduler.waiting)
        for request in pending:
            if request.finished:
                continue
            self.scheduler.finish(request, FinishReason.ABORT.value)
            out.append((request, self._final_output(request, [], [])))
            self._finished(request)
        self._emit(out)
