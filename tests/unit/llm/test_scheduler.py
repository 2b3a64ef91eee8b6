"""The scheduler as a plain object: feed it requests and finished steps, assert on the plans."""

from __future__ import annotations

import pytest

from trident.backends.llm.engine import EngineOverloaded, SamplingParams
from trident.backends.llm.engine.kv_cache import KVCacheManager
from trident.backends.llm.engine.request import Request, RequestStatus
from trident.backends.llm.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput


def make(
    num_blocks: int = 64, block_size: int = 4, prefix: bool = True, **config: int
) -> Scheduler:
    return Scheduler(SchedulerConfig(**config), KVCacheManager(num_blocks, block_size, prefix))


def req(rid: str, n: int, first: int = 0, max_tokens: int = 8) -> Request:
    return Request(rid, list(range(first, first + n)), SamplingParams(max_tokens=max_tokens))


def step(s: Scheduler) -> tuple[SchedulerOutput, dict[str, int]]:
    """Plan a step, mark it computed and append a token to every sequence that samples."""
    out = s.schedule()
    s.on_step_done(out)
    for x in out.scheduled:
        if x.samples:
            x.request.token_ids.append(7)
    return out, {x.request.request_id: x.num_tokens for x in out.scheduled}


def test_prefills_then_decodes_and_requests_join_at_any_step() -> None:
    s = make(max_num_batched_tokens=100)
    s.add_request(req("a", 10))
    assert step(s)[1] == {"a": 10}
    assert step(s)[1] == {"a": 1}
    s.add_request(req("b", 6, first=50))
    assert step(s)[1] == {"a": 1, "b": 6}  # a decode and a whole prefill in one step
    assert step(s)[1] == {"a": 1, "b": 1}


def test_a_long_prompt_is_chunked_under_the_budget_and_decodes_go_first() -> None:
    s = make(max_num_batched_tokens=8)
    s.add_request(req("a", 3))
    step(s)
    s.add_request(req("b", 20, first=30))
    assert step(s)[1] == {"a": 1, "b": 7}
    out, plan_ = step(s)
    assert plan_ == {"a": 1, "b": 7}
    assert not next(x for x in out.scheduled if x.request.request_id == "b").samples
    out, plan_ = step(s)
    assert plan_ == {"a": 1, "b": 6}
    assert all(x.samples for x in out.scheduled)  # b's last chunk samples its first token


def test_long_prefill_token_threshold_caps_one_requests_share() -> None:
    s = make(max_num_batched_tokens=100, long_prefill_token_threshold=5)
    s.add_request(req("a", 12))
    s.add_request(req("b", 3, first=40))
    assert step(s)[1] == {"a": 5, "b": 3}


def test_max_num_seqs_keeps_the_rest_waiting() -> None:
    s = make(max_num_seqs=2, max_num_batched_tokens=100)
    for i in range(3):
        s.add_request(req(f"r{i}", 4, first=10 * i))
    assert step(s)[1] == {"r0": 4, "r1": 4}
    assert [r.request_id for r in s.waiting] == ["r2"]
    s.finish(s.running[0], "stop")
    assert step(s)[1] == {"r1": 1, "r2": 4}


def test_finished_requests_leave_at_once_and_free_their_blocks() -> None:
    s = make(num_blocks=8)
    a = req("a", 9)
    s.add_request(a)
    step(s)
    assert len(a.block_ids) == 3
    s.finish(a, "length")
    assert a.status is RequestStatus.FINISHED and a.block_ids == []
    assert s.kv.pool.num_free == 8 and not s.has_work


def test_out_of_blocks_preempts_the_latest_request_by_recompute() -> None:
    s = make(num_blocks=4, block_size=4, max_num_batched_tokens=100)
    a, b = req("a", 8), req("b", 7, first=20)
    s.add_request(a)
    s.add_request(b)
    assert step(s)[1] == {"a": 8, "b": 7}  # 2 + 2 blocks: the pool is full
    out, plan_ = step(s)  # a needs a third block for its 9th token: b is preempted
    assert plan_ == {"a": 1} and out.preempted == [b]
    assert b.status is RequestStatus.WAITING and b.num_computed_tokens == 0
    assert b.block_ids == [] and s.waiting[0] is b
    assert b.num_tokens == 8  # prompt + its generated token, recomputed later
    s.finish(a, "stop")
    out, plan_ = step(s)
    # b's first block is still in the prefix cache: only the rest is recomputed.
    assert plan_ == {"b": 4} and out.admitted == [b] and out.scheduled[0].start == 4


def test_a_request_preempts_itself_when_it_is_the_last_one() -> None:
    s = make(num_blocks=2, block_size=4, max_num_batched_tokens=100)
    a = req("a", 8)
    s.add_request(a)
    step(s)
    out, plan_ = step(s)
    assert plan_ == {} and out.preempted == [a] and s.waiting[0] is a


def test_nothing_is_admitted_in_a_step_that_preempted() -> None:
    s = make(num_blocks=4, block_size=4, max_num_batched_tokens=100)
    s.add_request(req("a", 8))
    s.add_request(req("b", 8, first=20))
    step(s)
    s.add_request(req("c", 1, first=90))
    out, plan_ = step(s)
    assert out.preempted and "c" not in plan_


def test_prefix_cache_hits_skip_computed_blocks() -> None:
    s = make(block_size=4, max_num_batched_tokens=100)
    a = req("a", 10)
    s.add_request(a)
    step(s)
    s.finish(a, "stop")
    b = req("b", 11)  # the same first 10 tokens, and one more
    s.add_request(b)
    out, plan_ = step(s)
    assert plan_ == {"b": 3} and out.scheduled[0].start == 8
    assert b.num_cached_tokens == 8
    assert (s.kv.prefix_queries, s.kv.prefix_hits) == (10 + 11, 8)


def test_the_waiting_queue_is_bounded() -> None:
    s = make(max_waiting=2)
    s.add_request(req("a", 3))
    s.add_request(req("b", 3))
    with pytest.raises(EngineOverloaded):
        s.add_request(req("c", 3))


def test_aborting_a_waiting_request_removes_it() -> None:
    s = make(max_num_seqs=1)
    s.add_request(req("a", 3))
    s.add_request(req("b", 3))
    step(s)
    b = s.waiting[0]
    s.finish(b, "abort")
    assert not s.waiting and b.finish_reason == "abort"
