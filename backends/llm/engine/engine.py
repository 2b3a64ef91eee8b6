"""LLMEngine: the public face of the decoder engine (skeleton; the loop lands next)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from trident.backends.llm.engine.metrics import EngineMetrics
from trident.backends.llm.engine.outputs import EngineStats, RequestOutput
from trident.backends.llm.engine.params import EngineConfig, SamplingParams


class LLMEngine:
    """A decoder-only LM served with continuous batching over a paged KV cache.

    One engine thread owns the model, the KV cache and the scheduler; `generate()` is called from
    an asyncio loop and streams `RequestOutput`s back through a per-request asyncio queue.
    """

    tokenizer: Any
    metrics: EngineMetrics

    @classmethod
    def from_model_dir(
        cls, path: Path, config: EngineConfig, gguf_file: str | None = None
    ) -> LLMEngine:
        """Load a Hugging Face folder (config.json, *.safetensors, tokenizer files), or the GGUF
        file `gguf_file` inside `path` (dequantized on load). Does not start the thread."""
        raise NotImplementedError

    @property
    def model_name(self) -> str:
        """The model's name (its folder name, or the GGUF file's stem)."""
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        """max_model_len: the longest prompt + output this engine accepts."""
        raise NotImplementedError

    @property
    def eos_token_ids(self) -> list[int]:
        """Token ids that end generation unless ignore_eos."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the engine thread (idempotent)."""
        raise NotImplementedError

    async def generate(
        self, request_id: str, prompt: str | list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        """Stream one request's outputs; the last has finished=True.

        Raises EngineOverloaded, PromptTooLong or InvalidSamplingParams before yielding anything.
        Cancelling the consuming task, or aclose() on the iterator, aborts the request: its
        blocks are freed within one engine step."""
        raise NotImplementedError
        yield  # pragma: no cover

    def abort(self, request_id: str) -> None:
        """Abort a request from any thread; unknown or finished ids are ignored."""
        raise NotImplementedError

    def stats(self) -> EngineStats:
        """Gauges: running, waiting, KV blocks, prefix cache, preemptions, peak slot use."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop the thread; pending requests finish with finish_reason "abort"."""
        raise NotImplementedError
