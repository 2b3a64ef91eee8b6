"""What the engine hands back: per-step request outputs, logprobs and a statistics snapshot."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class FinishReason(str, enum.Enum):
    """Why a request ended (OpenAI's and vLLM's spellings)."""

    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens, or max_model_len reached
    ABORT = "abort"  # cancelled by the client, or the engine shut down


class TopLogprob(NamedTuple):
    """One of the most likely tokens at a position."""

    token_id: int
    logprob: float
    text: str


class TokenLogprob(NamedTuple):
    """The sampled token's logprob, and the top-n alternatives when the request asked for them."""

    token_id: int
    logprob: float
    text: str
    top: list[TopLogprob]


@dataclass
class RequestOutput:
    """What one engine step produced for one request (a delta, not the text so far).

    `new_text` is the detokenized text of the new tokens, less anything that might still turn out
    to be (part of) a stop string: that is held back until it is known not to be one, and a stop
    string is never emitted (unless include_stop_str_in_output). A step can therefore yield
    new_token_ids with an empty new_text; the final output flushes what remains.
    """

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    #: "stop", "length" or "abort" on the final output; None before.
    finish_reason: str | None
    #: The stop string or stop token id that ended the request; None for EOS or other reasons.
    stop_reason: str | int | None
    num_prompt_tokens: int
    #: Tokens generated so far, including new_token_ids.
    num_output_tokens: int
    #: One per new token when the request asked for logprobs, else empty.
    new_logprobs: list[TokenLogprob] = field(default_factory=list)
    #: Prompt tokens whose KV came from the prefix cache (0 when none); set on the first output.
    num_cached_tokens: int = 0


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's state (gauges), read from any thread."""

    num_running: int
    num_waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    #: kv_blocks_used / kv_blocks_total.
    kv_usage: float
    #: Prompt tokens looked up in the prefix cache, and found there, since start (vLLM counts
    #: tokens too).
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_preemptions: int
    #: Most blocks in use at once since start.
    peak_kv_blocks_used: int
    #: Highest ratio, over all steps, of token slots holding a real token to slots in blocks
    #: held by sequences (1.0 means no block holds an empty slot).
    peak_slot_usage: float
    #: Token slots in use / allocated at the step where most blocks were in use.
    slot_usage_at_peak_blocks: float
    num_steps: int
