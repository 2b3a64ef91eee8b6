"""The decoder engine of the `llm` backend: own PyTorch model code (Llama family, GPT-2), a
continuous-batching scheduler, a paged KV cache with prefix caching, a batched sampler and
incremental detokenization, driven by one engine thread. See docs/llm-engine.md."""

from trident.backends.llm.engine.engine import LLMEngine
from trident.backends.llm.engine.errors import (
    EngineOverloaded,
    EngineStopped,
    InvalidSamplingParams,
    PromptTooLong,
)
from trident.backends.llm.engine.metrics import (
    EngineMetrics,
    EngineMetricsSnapshot,
    HistogramSnapshot,
)
from trident.backends.llm.engine.outputs import (
    EngineStats,
    FinishReason,
    RequestOutput,
    TokenLogprob,
    TopLogprob,
)
from trident.backends.llm.engine.params import EngineConfig, SamplingParams

__all__ = [
    "EngineConfig",
    "EngineMetrics",
    "EngineMetricsSnapshot",
    "EngineOverloaded",
    "EngineStats",
    "EngineStopped",
    "FinishReason",
    "HistogramSnapshot",
    "InvalidSamplingParams",
    "LLMEngine",
    "PromptTooLong",
    "RequestOutput",
    "SamplingParams",
    "TokenLogprob",
    "TopLogprob",
]
