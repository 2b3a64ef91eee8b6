"""The `llm` backend: decoder-only language models served by Trident's own engine.

A model folder says `backend: "llm"`; its engine settings come from config.pbtxt parameters and
`<version>/model.json` (backends/llm/model_settings.py). Each instance owns one engine (its own
thread, continuous batching, paged KV cache: backends/llm/engine/).

How requests flow: the model is decoupled with max_batch_size 0, so the core's direct scheduler
hands over one request at a time and never batches; `execute` is a coroutine on the event loop
that only decodes the request's tensors, starts a task that streams the engine's outputs into the
request's responder, and returns. Many requests are thus in the engine at once, batched step by
step there. A client's cancel or disconnect cancels the task, which closes the engine's generator
and so aborts the request (its KV blocks are freed at the next step). Model statistics count one
execution per request, not per token.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

from trident.backends.base import Backend, ComputeTiming, InstanceContext, ModelInstance
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import CancelledError, ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceResponse

from . import prometheus
from .generation import run_generation
from .model_settings import load_settings
from .tensor_schema import PromptRenderer, complete_config, decode_request

logger = logging.getLogger("trident.backends.llm")


class LLMBackend(Backend):
    name = "llm"
    single_response_when_unary = True
    platforms = ()
    default_model_filename = ""

    def __init__(self) -> None:
        self._instances: dict[int, LLMModelInstance] = {}
        self._lock = threading.Lock()

    def auto_complete_config(self, config: mc.ModelConfig, model_dir: Path, strict: bool) -> None:
        """Add the vLLM-backend inputs and outputs, and make the model decoupled, unless
        strict; either way refuse batching settings (the engine batches)."""
        if strict:
            if config.max_batch_size > 0:
                raise ModelLoadError("llm models need max_batch_size: 0 (the engine batches)")
            return
        complete_config(config)

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        instance = LLMModelInstance(context, self._forget)
        with self._lock:
            self._instances[id(instance)] = instance
        return instance

    def _forget(self, instance: LLMModelInstance) -> None:
        with self._lock:
            self._instances.pop(id(instance), None)

    def instances(self) -> list[LLMModelInstance]:
        with self._lock:
            return list(self._instances.values())

    def metrics_text(self) -> str:
        """vllm:* metric families of every loaded LLM model (backends/llm/prometheus.py)."""
        samples: dict[tuple[str, int], prometheus.ModelSample] = {}
        for instance in self.instances():
            key = (instance.model_name, instance.model_version)
            sample = samples.setdefault(key, prometheus.ModelSample(*key))
            sample.snapshots.append(instance.engine.metrics.snapshot())
            sample.stats.append(instance.engine.stats())
        return prometheus.render(samples.values())


def create_backend() -> Backend:
    return LLMBackend()


def _engine_module() -> Any:
    # Imported with the first instance: it pulls in torch and transformers.
    from . import engine

    return engine


class LLMModelInstance(ModelInstance):
    """One engine serving one model version."""

    is_async = True
    decoupled = True

    def __init__(self, context: InstanceContext, forget: Any) -> None:
        self.model_name = context.model_name
        self.model_version = context.model_version
        self._forget = forget
        self._loop = context.loop
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count()
        engine_api = _engine_module()
        settings = load_settings(context.config, context.version_dir)
        args = dict(settings.engine_args)
        if "device" not in args and context.kind == "GPU":
            args["device"] = f"cuda:{context.device_id}"
        try:
            config = engine_api.EngineConfig.from_dict(args)
        except (ValueError, TypeError) as exc:
            raise ModelLoadError(f"llm engine setting {exc}") from None
        started = time.monotonic()
        try:
            self.engine = engine_api.LLMEngine.from_model_dir(
                settings.source.folder, config, gguf_file=settings.source.gguf_file
            )
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the llm model from {settings.source.folder}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        try:
            self.renderer = PromptRenderer(
                self.engine.tokenizer, self.engine.context_length, settings.chat_template
            )
            self.engine.start()
        except BaseException:
            self.engine.shutdown()
            raise
        logger.info(
            "llm model '%s' version %d loaded from %s in %.1f s",
            self.model_name,
            self.model_version,
            settings.source.folder / (settings.source.gguf_file or ""),
            time.monotonic() - started,
        )

    async def execute(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[InferenceResponse] | None:
        """Decode each request and start its generation; returns at once (decoupled)."""
        jobs = [decode_request(request, self.renderer) for request in requests]
        timing.input_end_ns = time.monotonic_ns()
        loop = asyncio.get_running_loop()
        for request, job in zip(requests, jobs, strict=True):
            engine_id = f"{self.model_name}-{self.model_version}-{next(self._ids)}"
            task = loop.create_task(run_generation(self.engine, engine_id, request, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_end_if_cancelled(request))
            request.cancellation.add_callback(_canceller(loop, task))
        return None

    def close(self) -> None:
        """Stop the engine: requests still running end with finish_reason "abort"."""
        self._forget(self)
        self.engine.shutdown()


def _canceller(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> Any:
    """A cancellation callback; clients may cancel from any thread."""

    def cancel() -> None:
        loop.call_soon_threadsafe(task.cancel)

    return cancel


def _end_if_cancelled(request: InFlightRequest) -> Any:
    """A task cancelled before it started never ran its own handler: end the request here
    (a responder ignores anything after the final response)."""

    def done(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            request.responder.fail(
                CancelledError(f"request for model '{request.model_name}' was cancelled")
            )

    return done
