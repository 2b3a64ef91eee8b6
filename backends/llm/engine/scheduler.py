"""Continuous batching: which requests run in the next step, and how many tokens each.

A plain object (no threads, no clock, no model): the engine feeds it requests and the tokens it
sampled, tests feed it the same and assert on the steps it plans. There are no prefill or decode
phases, only a token budget (vLLM V1): a request has `num_tokens` (prompt + outputs) of which
`num_computed_tokens` are in the KV cache, and each step lets requests catch up.

Each step:
1. Running requests first, in admission order: each gets min(its pending tokens,
   long_prefill_token_threshold, what is left of the budget). When the pool has no block left
   for one, the most recently admitted running request is preempted (its blocks freed, its
   progress reset, back to the head of the queue) until the allocation fits.
2. Then, if nothing was preempted, waiting requests are admitted first come first served while
   the budget, max_num_seqs and the pool allow; prefix-cached blocks are taken first, and the
   last admitted prompt is chunked to fit the budget.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from trident.backends.llm.engine.errors import EngineOverloaded
from trident.backends.llm.engine.kv_cache import KVCacheManager
from trident.backends.llm.engine.request import Request, RequestStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_model_len: int = 2048
    long_prefill_token_threshold: int = 0
    max_waiting: int = 256


@dataclass
class ScheduledRequest:
    """One request's share of a step: `num_tokens` tokens from position `start`."""

    request: Request
    start: int
    num_tokens: int
    #: True when this chunk reaches the request's last token, so a new token is sampled.
    samples: bool = False

    @classmethod
    def of(cls, request: Request, start: int, num_tokens: int) -> ScheduledRequest:
        return cls(request, start, num_tokens, start + num_tokens == request.num_tokens)


@dataclass
class SchedulerOutput:
    """The plan of one step."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    #: Requests admitted from the waiting queue this step (first scheduling or after preemption).
    admitted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    """The waiting queue, the running list and the step planner over a KVCacheManager."""

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager) -> None:
        self.config = config
        self.kv = kv
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add_request(self, request: Request) -> None:
        """Queue a new request; EngineOverloaded when max_waiting requests already wait."""
        if len(self.waiting) >= self.config.max_waiting:
            raise EngineOverloaded(
                f"{len(self.waiting)} requests are waiting already (max_waiting)"
            )
        request.status = RequestStatus.WAITING
        self.waiting.append(request)

    def _budget_for(self, request: Request, budget: int) -> int:
        n = request.num_tokens - request.num_computed_tokens
        if self.config.long_prefill_token_threshold:
            n = min(n, self.config.long_prefill_token_threshold)
        return min(n, budget)

    def _preempt_last(self, out: SchedulerOutput) -> Request:
        victim = self.running.pop()
        self.kv.reset_request(victim)
        victim.status = RequestStatus.WAITING
        victim.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(victim)
        out.preempted.append(victim)
        return victim

    def schedule(self) -> SchedulerOutput:
        """Plan the next step; the blocks for every scheduled token are allocated."""
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            n = self._budget_for(request, budget)
            if n <= 0:
                i += 1
                continue
            preempted_self = False
            while not self.kv.allocate_slots(request, n):
                if self._preempt_last(out) is request:
                    preempted_self = True
                    break
            if preempted_self:
                break
            out.scheduled.append(ScheduledRequest.of(request, request.num_computed_tokens, n))
            budget -= n
            i += 1
        if out.preempted:
            return out
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            cached_blocks, num_cached = self.kv.get_computed_blocks(request)
            request.num_computed_tokens = num_cached
            n = self._budget_for(request, budget)
            if not self.kv.allocate_slots(request, n, cached_blocks):
                request.num_computed_tokens = 0
                break
            if request.num_preemptions == 0:
                request.num_cached_tokens = num_cached
                self.kv.record_prefix_lookup(request.num_tokens, num_cached)
            self.waiting.popleft()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            out.admitted.append(request)
            out.scheduled.append(ScheduledRequest.of(request, num_cached, n))
            budget -= n
        return out

    def on_step_done(self, out: SchedulerOutput) -> None:
        """Mark the scheduled tokens computed (call before appending sampled tokens) and cache
        the blocks they completed."""
        for s in out.scheduled:
            s.request.num_computed_tokens = s.start + s.num_tokens
            self.kv.cache_full_blocks(s.request)

    def finish(self, request: Request, reason: str, stop_reason: str | int | None = None) -> None:
        """End a request (stopped, length, aborted): leave the queues, free its blocks now."""
        if request.status is RequestStatus.FINISHED:
            return
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            try:
                self.waiting.remove(request)
            except ValueError:
                pass
        self.kv.free(request)
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        request.stop_reason = stop_reason

    def live_token_slots(self) -> tuple[int, int]:
        """(token slots holding a computed token, slots in blocks held by running requests)."""
        live = sum(r.num_computed_tokens for r in self.running)
        held = sum(len(r.block_ids) for r in self.running) * self.kv.block_size
        return live, held
