"""Per-request sampling parameters and per-engine settings, each with its default and its checks.

Both come from client- or config-given JSON, so `from_dict` rejects unknown keys, wrong types
(a bool is not an int here) and out-of-range values with an `InvalidSamplingParams` naming the
field, before anything is allocated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trident.backends.llm.engine.errors import InvalidSamplingParams

#: Most top-n logprobs a request may ask for (OpenAI's own cap is 20).
MAX_LOGPROBS = 20
#: Most stop strings per request, and longest stop string in characters.
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256
#: Most stop token ids per request.
MAX_STOP_TOKEN_IDS = 256


def _int(name: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSamplingParams(name, f"expected an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise InvalidSamplingParams(name, f"must be >= {minimum}, got {value}")
    return value


def _float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSamplingParams(name, f"expected a number, got {type(value).__name__}")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise InvalidSamplingParams(name, "must be a finite number")
    return result


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidSamplingParams(name, f"expected true or false, got {type(value).__name__}")
    return value


def _optional_int(name: str, value: object, *, minimum: int | None = None) -> int | None:
    return None if value is None else _int(name, value, minimum=minimum)


def _unknown_keys(cls: type, d: Mapping[str, object]) -> None:
    if not isinstance(d, Mapping):
        raise InvalidSamplingParams("parameters", f"expected an object, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in known:
            raise InvalidSamplingParams(str(key), f"unknown parameter (known: {sorted(known)})")


@dataclass
class SamplingParams:
    """How one request samples and when it stops (vLLM's names and defaults).

    The pipeline, per step: min_tokens mask -> repetition / presence / frequency penalties ->
    temperature (0 means greedy argmax) -> top-k -> top-p -> min-p -> sample.
    """

    #: Most tokens to generate; the request ends with finish_reason "length" there.
    max_tokens: int = 16
    #: Softmax temperature; 0 means greedy (argmax), and then top_k/top_p/min_p/seed do nothing.
    temperature: float = 1.0
    #: Keep only the k most likely tokens; 0 or -1 turns it off.
    top_k: int = 0
    #: Keep the smallest set of tokens whose probability adds up to top_p, in (0, 1].
    top_p: float = 1.0
    #: Drop tokens whose probability is below min_p times the top token's, in [0, 1].
    min_p: float = 0.0
    #: Seed of the request's own random generator: the same seed gives the same text whatever
    #: else is in the batch. None: the engine's shared generator.
    seed: int | None = None
    #: > 1 discourages tokens already in the prompt or output (CTRL's rule), > 0.
    repetition_penalty: float = 1.0
    #: Subtracted once from the logits of tokens already generated, in [-2, 2].
    presence_penalty: float = 0.0
    #: Subtracted from a token's logit once per time it was generated, in [-2, 2].
    frequency_penalty: float = 0.0
    #: Strings that end the request when generated; the text stops before them unless
    #: include_stop_str_in_output. A plain string is taken as a list of one.
    stop: list[str] = field(default_factory=list)
    #: Token ids that end the request (kept in the token ids, not in the text).
    stop_token_ids: list[int] = field(default_factory=list)
    #: Keep generating past the model's end-of-sequence tokens.
    ignore_eos: bool = False
    #: EOS and stop token ids are masked until this many tokens have been generated.
    min_tokens: int = 0
    #: None: no logprobs; 0: the sampled token's logprob; n: also the n most likely tokens.
    logprobs: int | None = None
    #: Keep the matched stop string at the end of the text.
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InvalidSamplingParams naming the first field that is out of range."""
        _int("max_tokens", self.max_tokens, minimum=1)
        if _float("temperature", self.temperature) < 0:
            raise InvalidSamplingParams("temperature", f"must be >= 0, got {self.temperature}")
        _int("top_k", self.top_k, minimum=-1)
        top_p = _float("top_p", self.top_p)
        if not 0.0 < top_p <= 1.0:
            raise InvalidSamplingParams("top_p", f"must be in (0, 1], got {top_p}")
        if not 0.0 <= _float("min_p", self.min_p) <= 1.0:
            raise InvalidSamplingParams("min_p", f"must be in [0, 1], got {self.min_p}")
        seed = _optional_int("seed", self.seed)
        if seed is not None and not -(2**63) <= seed < 2**64:  # torch.Generator's range
            raise InvalidSamplingParams("seed", "must fit in 64 bits")
        if _float("repetition_penalty", self.repetition_penalty) <= 0:
            raise InvalidSamplingParams("repetition_penalty", "must be > 0")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= _float(name, getattr(self, name)) <= 2.0:
                raise InvalidSamplingParams(name, f"must be in [-2, 2], got {getattr(self, name)}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.stop, list):
            raise InvalidSamplingParams("stop", "expected a string or a list of strings")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidSamplingParams("stop", f"at most {MAX_STOP_STRINGS} stop strings")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise InvalidSamplingParams("stop", "every stop string must be a non-empty string")
            if len(s) > MAX_STOP_STRING_CHARS:
                raise InvalidSamplingParams("stop", f"longer than {MAX_STOP_STRING_CHARS} chars")
        if not isinstance(self.stop_token_ids, list):
            raise InvalidSamplingParams("stop_token_ids", "expected a list of integers")
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise InvalidSamplingParams("stop_token_ids", f"at most {MAX_STOP_TOKEN_IDS} ids")
        for t in self.stop_token_ids:
            _int("stop_token_ids", t, minimum=0)
        _bool("ignore_eos", self.ignore_eos)
        _int("min_tokens", self.min_tokens, minimum=0)
        if self.min_tokens > self.max_tokens:
            raise InvalidSamplingParams("min_tokens", "must not exceed max_tokens")
        if self.logprobs is not None:
            _int("logprobs", self.logprobs, minimum=0)
            if self.logprobs > MAX_LOGPROBS:
                raise InvalidSamplingParams("logprobs", f"at most {MAX_LOGPROBS}")
        _bool("include_stop_str_in_output", self.include_stop_str_in_output)

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (temperature 0, or top_k 1)."""
        return self.temperature == 0.0 or self.top_k == 1

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> SamplingParams:
        """Build from JSON-like values; unknown keys and bad values raise InvalidSamplingParams."""
        _unknown_keys(cls, d)
        values: dict[str, Any] = dict(d)
        for key in ("stop", "stop_token_ids"):
            if isinstance(values.get(key), (list, tuple)):
                values[key] = list(values[key])
            elif values.get(key) is None and key in values:
                values[key] = []
        return cls(**values)


@dataclass
class EngineConfig:
    """Settings of one engine: where it runs, how big its KV cache is, how it batches."""

    #: Weights and KV-cache type: "auto" (float32 on CPU, bfloat16 on GPU), "float32",
    #: "bfloat16" or "float16" (float16 on GPU only); "float64" exists for exactness tests.
    dtype: str = "auto"
    #: "cpu", "cuda" or "cuda:N".
    device: str = "cpu"
    #: Tokens per KV-cache block.
    block_size: int = 16
    #: KV-cache blocks in the pool; None: from kv_cache_bytes, else (GPU) from
    #: gpu_memory_fraction, else (CPU) 512 MiB worth of blocks; a pool sized from bytes holds
    #: no more than max_num_seqs sequences of max_model_len tokens.
    num_blocks: int | None = None
    #: Bytes of KV cache (all layers, keys and values); used when num_blocks is None.
    kv_cache_bytes: int | None = None
    #: GPU only: fraction of the device's memory that weights + activations + KV cache may
    #: take; the KV pool gets what is left after loading the weights and a profiling step.
    gpu_memory_fraction: float = 0.9
    #: Most sequences in one step (running requests).
    max_num_seqs: int = 64
    #: Token budget of one step: decode tokens plus prefill chunks.
    max_num_batched_tokens: int = 512
    #: Longest sequence (prompt + output); None: the model's context length.
    max_model_len: int | None = None
    #: Most requests waiting for admission; one more raises EngineOverloaded.
    max_waiting: int = 256
    #: Reuse KV blocks of identical prompt prefixes (full blocks only).
    enable_prefix_caching: bool = True
    #: Most prompt tokens one request may prefill in one step (0: no limit but the budget),
    #: so a long prompt does not stall the decodes sharing the step.
    long_prefill_token_threshold: int = 0
    #: torch intra-op threads for the engine; None: all cores but one (the event loop keeps
    #: one), at least one. torch's thread pool is process-wide: the last engine started wins.
    num_threads: int | None = None
    #: Processes the model is split over with torch.distributed (gloo on CPU, NCCL on GPU,
    #: rank r on cuda:r); needs a model loaded from a folder (from_model_dir).
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InvalidSamplingParams naming the first setting that is out of range."""
        if self.dtype not in ("auto", "float32", "bfloat16", "float16", "float64"):
            raise InvalidSamplingParams(
                "dtype", "must be one of auto, float32, bfloat16, float16, float64"
            )
        if self.dtype == "float16" and self.device == "cpu":
            raise InvalidSamplingParams("dtype", "float16 needs a GPU; use bfloat16 on CPU")
        if not isinstance(self.device, str) or not (
            self.device == "cpu"
            or self.device == "cuda"
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise InvalidSamplingParams("device", "must be cpu, cuda or cuda:N")
        _int("block_size", self.block_size, minimum=1)
        if self.block_size > 1024:
            raise InvalidSamplingParams("block_size", "must be <= 1024")
        _optional_int("num_blocks", self.num_blocks, minimum=1)
        _optional_int("kv_cache_bytes", self.kv_cache_bytes, minimum=1)
        fraction = _float("gpu_memory_fraction", self.gpu_memory_fraction)
        if not 0.0 < fraction <= 1.0:
            raise InvalidSamplingParams("gpu_memory_fraction", "must be in (0, 1]")
        _int("max_num_seqs", self.max_num_seqs, minimum=1)
        _int("max_num_batched_tokens", self.max_num_batched_tokens, minimum=1)
        _optional_int("max_model_len", self.max_model_len, minimum=2)
        _int("max_waiting", self.max_waiting, minimum=0)
        _bool("enable_prefix_caching", self.enable_prefix_caching)
        _int("long_prefill_token_threshold", self.long_prefill_token_threshold, minimum=0)
        _optional_int("num_threads", self.num_threads, minimum=1)
        _int("tensor_parallel_size", self.tensor_parallel_size, minimum=1)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> EngineConfig:
        """Build from JSON-like values (model.json); bad keys raise InvalidSamplingParams."""
        _unknown_keys(cls, d)
        return cls(**dict(d))  # type: ignore[arg-type]
