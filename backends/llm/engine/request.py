"""One request's state inside the engine (owned by the engine thread)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from trident.backends.llm.engine.params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # not admitted yet, or preempted (its KV blocks dropped)
    RUNNING = "running"  # holds KV blocks; scheduled every step until it finishes
    FINISHED = "finished"


@dataclass(eq=False)
class Request:
    """Tokens, progress and KV blocks of one generation.

    `token_ids` is the prompt followed by the generated tokens; `num_computed_tokens` of them have
    their keys and values in the cache. A preempted request drops its blocks and starts over at
    0: prompt and outputs are recomputed as one longer prompt (vLLM's recompute preemption).
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float = 0.0
    #: Most tokens this request may generate: max_tokens capped by max_model_len.
    max_output_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: RequestStatus = RequestStatus.WAITING
    block_ids: list[int] = field(default_factory=list)
    #: Chained hashes of the full blocks of token_ids computed so far (prefix caching).
    block_hashes: list[bytes] = field(default_factory=list)
    #: How many of block_ids are registered in the prefix cache.
    num_cached_blocks: int = 0
    #: Prompt tokens found in the prefix cache at first admission.
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    #: The engine's per-request extras (output sink, detokenizer, generator).
    sink: Any = None

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)
        if not self.max_output_tokens:
            self.max_output_tokens = self.params.max_tokens

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids) :]

    @property
    def finished(self) -> bool:
        return self.status is RequestStatus.FINISHED
