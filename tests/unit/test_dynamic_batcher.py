"""The dynamic batcher: the plain batcher with made-up times (no clock, no threads), then the
asyncio driver with fake instances."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from trident.backends.base import ModelInstance
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.model_config import parse_config_text
from trident.runtime.core.scheduling import create_scheduler
from trident.runtime.core.scheduling.base import SingleResponder
from trident.runtime.core.scheduling.close_reason import DYNAMIC_CLOSE_REASONS
from trident.runtime.core.scheduling.dynamic_batcher import (
    BatcherSettings,
    DynamicBatcher,
    DynamicBatchScheduler,
)
from trident.runtime.core.scheduling.precise_timer import LoopTimer, TimerFdTimer, create_timer
from trident.runtime.core.scheduling.queue_policy import QueuePolicy, TimeoutAction
from trident.runtime.core.stats import ModelStats
from trident.runtime.errors import ModelLoadError, UnavailableError
from trident.runtime.observability.metrics import render_metrics
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

US = 1_000  # ns


def _request(value: int = 0, rows: int = 1, priority: int = 0, timeout_us: int = 0):
    data = np.full((rows, 2), value, np.float32)
    request = InferenceRequest(
        model_name="m",
        id=str(value),
        inputs=[Tensor("X", "FP32", data.shape, data)],
        priority=priority,
        timeout_us=timeout_us,
    )
    return InFlightRequest(request, 1)


def _batcher(max_batch_size: int = 8, **fields) -> DynamicBatcher:
    return DynamicBatcher("m", BatcherSettings(max_batch_size=max_batch_size, **fields))


def _add(batcher: DynamicBatcher, now: int, *requests: InFlightRequest) -> None:
    for request in requests:
        batcher.add(request, now, request.inputs[0].shape[0])


def _ids(batch) -> list[str]:
    return [request.id for request in batch.requests]


# ------------------------------------------------------------------ batch formation


def test_batches_never_exceed_max_batch_size_counted_in_inferences():
    batcher = _batcher(max_batch_size=8)
    _add(batcher, 0, _request(1, rows=3), _request(2, rows=3), _request(3, rows=3))
    first = batcher.poll(0)
    assert first.size == 6 and _ids(first) == ["1", "2"]
    assert first.reason == "max_batch_size"  # the third request would not fit
    second = batcher.poll(0)
    assert second.size == 3 and second.reason == "no_more_requests"
    assert batcher.poll(0) is None and len(batcher) == 0


def test_a_full_batch_closes_at_once_even_with_a_delay():
    batcher = _batcher(max_batch_size=4, max_queue_delay_us=10_000)
    _add(batcher, 0, *(_request(i) for i in range(6)))
    batch = batcher.poll(0)
    assert batch.size == 4 and batch.reason == "max_batch_size"
    assert batcher.poll(0) is None  # two left: they wait for the delay
    assert batcher.wakeup_ns(instance_free=True) == 10_000 * US


def test_the_delay_is_respected_then_the_batch_closes_with_what_came():
    batcher = _batcher(max_batch_size=8, max_queue_delay_us=500)
    _add(batcher, 0, _request(1))
    assert batcher.poll(0) is None
    assert batcher.wakeup_ns(instance_free=True) == 500 * US
    _add(batcher, 100 * US, _request(2))
    assert batcher.poll(100 * US) is None
    assert batcher.poll(499 * US) is None
    batch = batcher.poll(500 * US)
    assert _ids(batch) == ["1", "2"]
    assert batch.reason == "queue_delay"
    assert batch.queue_delay_ns == 500 * US


def test_no_delay_sends_what_is_queued_and_names_a_busy_instance():
    batcher = _batcher(max_batch_size=8)
    _add(batcher, 0, _request(1))
    assert batcher.poll(0).reason == "no_more_requests"
    _add(batcher, 10, _request(2), _request(3))
    batch = batcher.poll(20, instance_waited=True)
    assert batch.size == 2 and batch.reason == "instance_free"


def test_preferred_sizes_close_a_batch_before_the_delay():
    batcher = _batcher(max_batch_size=16, preferred_batch_sizes=(4, 8), max_queue_delay_us=1_000)
    _add(batcher, 0, *(_request(i) for i in range(3)))
    assert batcher.poll(0) is None
    _add(batcher, 10, _request(3))
    batch = batcher.poll(10)
    assert batch.size == 4 and batch.reason == "preferred_size"
    # Five queued: the largest preferred size they reach (4) goes, the fifth waits.
    _add(batcher, 20, *(_request(i) for i in range(10, 15)))
    batch = batcher.poll(20)
    assert batch.size == 4 and batch.reason == "preferred_size"
    assert batcher.poll(20) is None and len(batcher) == 1


def test_preferred_size_is_not_forced_once_the_delay_passed():
    batcher = _batcher(max_batch_size=16, preferred_batch_sizes=(4,), max_queue_delay_us=100)
    _add(batcher, 0, *(_request(i) for i in range(6)))
    batch = batcher.poll(100 * US)  # waited the whole delay: take everything that fits
    assert batch.size == 6 and batch.reason == "queue_delay"


def test_a_batch_that_cannot_reach_a_preferred_size_closes_below_it():
    batcher = _batcher(max_batch_size=16, preferred_batch_sizes=(8,), max_queue_delay_us=1_000)
    _add(batcher, 0, _request(1, rows=3), _request(2, rows=3), _request(3, rows=3))
    batch = batcher.poll(0)
    assert batch.size == 6 and batch.reason == "preferred_size"


def test_needs_poll_only_when_a_new_request_can_close_the_batch():
    batcher = _batcher(max_batch_size=16, preferred_batch_sizes=(4, 8), max_queue_delay_us=1_000)
    entries = [batcher.add(_request(i), 0, 1) for i in range(2)]
    assert batcher.needs_poll(entries[0])  # nothing decided yet
    assert batcher.poll(0) is None
    entry = batcher.add(_request(2), 1, 1)
    assert not batcher.needs_poll(entry)  # 3 queued: below the next preferred size
    entry = batcher.add(_request(3), 2, 1)
    assert batcher.needs_poll(entry)  # 4 queued: a preferred size


# ------------------------------------------------------------------ priorities and policies


def test_higher_priority_levels_run_first_and_odd_priorities_use_the_default():
    batcher = _batcher(max_batch_size=1, priority_levels=3, default_priority_level=2)
    _add(
        batcher,
        0,
        _request(1, priority=3),
        _request(2, priority=0),  # default level 2
        _request(3, priority=9),  # above priority_levels: default level 2, as Triton does
        _request(4, priority=1),
    )
    order = [_ids(batcher.poll(0))[0] for _ in range(4)]
    assert order == ["4", "2", "3", "1"]


def test_timeout_reject_fails_expired_requests_even_while_instances_are_busy():
    policy = QueuePolicy(timeout_action=TimeoutAction.REJECT, default_timeout_us=1_000)
    batcher = _batcher(max_batch_size=8, default_policy=policy)
    _add(batcher, 0, _request(1))
    _add(batcher, 500 * US, _request(2))
    # No instance free: the next wake-up is the first expiry.
    assert batcher.wakeup_ns(instance_free=False) == 1_000 * US
    batcher.expire(1_000 * US)
    rejected = batcher.take_rejected()
    assert [entry.request.id for entry in rejected] == ["1"]
    assert len(batcher) == 1
    assert _ids(batcher.poll(1_000 * US)) == ["2"]


def test_timeout_delay_moves_expired_requests_behind_the_others():
    policy = QueuePolicy(timeout_action=TimeoutAction.DELAY, allow_timeout_override=True)
    batcher = _batcher(max_batch_size=1, default_policy=policy)
    _add(batcher, 0, _request(1, timeout_us=100), _request(2), _request(3))
    assert [_ids(batcher.poll(200 * US))[0] for _ in range(3)] == ["2", "3", "1"]
    assert batcher.take_rejected() == []


def test_request_timeouts_apply_only_when_the_policy_allows_them():
    strict = _batcher(default_policy=QueuePolicy(default_timeout_us=0))
    assert strict.add(_request(1, timeout_us=10), 0, 1).expires_ns == 0
    assert not strict.has_timeouts
    shortened = QueuePolicy(default_timeout_us=1_000, allow_timeout_override=True)
    assert shortened.timeout_us(10) == 10
    assert shortened.timeout_us(5_000) == 1_000  # a request may not lengthen the default
    assert shortened.timeout_us(0) == 1_000
    assert QueuePolicy(allow_timeout_override=True).timeout_us(250) == 250


def test_a_full_queue_rejects_at_once_per_level():
    policies = {1: QueuePolicy(max_queue_size=1)}
    batcher = _batcher(
        priority_levels=2,
        default_priority_level=2,
        default_policy=QueuePolicy(max_queue_size=2),
        level_policies=policies,
    )
    _add(batcher, 0, _request(1, priority=1))
    with pytest.raises(UnavailableError) as raised:
        _add(batcher, 0, _request(2, priority=1))
    assert raised.value.http_status == 503 and raised.value.grpc_code == "UNAVAILABLE"
    assert "max_queue_size" in raised.value.message and "priority level 1" in raised.value.message
    _add(batcher, 0, _request(3), _request(4))  # level 2 has room for two
    with pytest.raises(UnavailableError):
        _add(batcher, 0, _request(5))
    assert len(batcher) == 3


def test_a_removed_request_leaves_the_queue():
    batcher = _batcher(max_queue_delay_us=100)
    entry = batcher.add(_request(1), 0, 1)
    _add(batcher, 0, _request(2))
    assert batcher.remove(entry)
    assert not batcher.remove(entry)
    assert _ids(batcher.poll(100 * US)) == ["2"]


# ------------------------------------------------------------------ settings from config.pbtxt


def _config(text: str):
    return parse_config_text(
        'name: "m" backend: "python" max_batch_size: 8\n'
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]\n' + text,
        "config.pbtxt",
    )


def test_settings_read_every_dynamic_batching_field():
    settings = BatcherSettings.from_config(
        _config(
            """dynamic_batching {
              preferred_batch_size: [ 4, 2 ] max_queue_delay_microseconds: 300
              priority_levels: 2 default_priority_level: 2
              default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 7
                                     allow_timeout_override: true max_queue_size: 3 }
              priority_queue_policy { key: 1 value { max_queue_size: 9 } }
            }"""
        )
    )
    assert settings.max_batch_size == 8
    assert settings.preferred_batch_sizes == (2, 4)
    assert settings.max_queue_delay_us == 300
    assert (settings.priority_levels, settings.default_priority_level) == (2, 2)
    assert settings.default_policy == QueuePolicy(TimeoutAction.DELAY, 7, True, 3)
    assert settings.level_policies == {1: QueuePolicy(TimeoutAction.REJECT, 0, False, 9)}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("preferred_batch_size: [ 16 ]", "preferred_batch_size 16"),
        ("priority_levels: 2", "default_priority_level"),
        (
            "priority_levels: 2 default_priority_level: 1 "
            "priority_queue_policy { key: 5 value { } }",
            "level 5",
        ),
    ],
)
def test_invalid_settings_fail_the_load_with_a_reason(fields, message):
    with pytest.raises(ModelLoadError, match=message):
        BatcherSettings.from_config(_config(f"dynamic_batching {{ {fields} }}"))


def test_create_scheduler_picks_the_dynamic_batcher():
    @dataclass
    class Model:
        name: str
        version: int
        config: object
        stats: ModelStats
        max_batch_size: int
        ensemble: object = None

    batched = Model("m", 1, _config("dynamic_batching { }"), ModelStats(), 8)
    assert isinstance(create_scheduler(batched, []), DynamicBatchScheduler)
    plain = Model("m", 1, _config(""), ModelStats(), 8)
    assert not isinstance(create_scheduler(plain, []), DynamicBatchScheduler)


# ------------------------------------------------------------------ the asyncio driver


class RecordingModel(ModelInstance):
    """Records each batch's request ids, sleeps, echoes X as the response."""

    def __init__(self, log: list, delay_s: float = 0.0, slow: dict[str, float] | None = None):
        self.log = log
        self.delay_s = delay_s
        #: request id -> how long a batch holding it takes instead.
        self.slow = slow or {}
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def execute(self, requests, timing):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.log.append([r.id for r in requests])
        time.sleep(max([self.slow.get(r.id, self.delay_s) for r in requests]))
        with self.lock:
            self.running -= 1
        return [InferenceResponse(id=r.id, outputs=list(r.inputs)) for r in requests]


class FakeTimer:
    """Records deadlines; tests fire it by hand."""

    instances: list[FakeTimer] = []

    def __init__(self, loop, callback):
        self.callback = callback
        self.deadline_ns = 0
        FakeTimer.instances.append(self)

    def set(self, deadline_ns: int) -> None:
        self.deadline_ns = deadline_ns

    def close(self) -> None:
        pass


def _responded(loop, request: InFlightRequest) -> InFlightRequest:
    request.responder = SingleResponder(loop, threading.get_ident())
    return request


def _scheduler(models, settings: BatcherSettings, stats: ModelStats, **kwargs):
    loop = asyncio.get_running_loop()
    workers = [InstanceWorker(f"w{i}", model, loop) for i, model in enumerate(models)]
    return DynamicBatchScheduler("m", 1, workers, stats, settings, **kwargs), workers


async def _finish(scheduler, workers) -> None:
    await scheduler.stop()
    for worker in workers:
        worker.close()


def test_driver_waits_for_its_timer_then_runs_one_batch():
    async def scenario():
        loop = asyncio.get_running_loop()
        now = [0]
        log: list = []
        stats = ModelStats()
        FakeTimer.instances.clear()
        settings = BatcherSettings(max_batch_size=8, max_queue_delay_us=500)
        scheduler, workers = _scheduler(
            [RecordingModel(log)], settings, stats, clock=lambda: now[0], timer_factory=FakeTimer
        )
        requests = [_responded(loop, _request(i)) for i in range(3)]
        for request in requests:
            scheduler.submit(request)
            now[0] += 100 * US
        (timer,) = FakeTimer.instances
        assert timer.deadline_ns == 500 * US and log == [] and stats.pending == 3
        now[0] = 500 * US
        timer.callback()
        responses = [await r.responder.result() for r in requests]
        await _finish(scheduler, workers)
        return log, responses, stats

    log, responses, stats = asyncio.run(scenario())
    assert log == [["0", "1", "2"]]
    assert [r.id for r in responses] == ["0", "1", "2"]
    assert stats.execution_count == 1 and stats.inference_count == 3
    assert stats.success.count == 3 and stats.pending == 0
    assert stats.batch_close_reasons["queue_delay"] == 1
    assert list(stats.batches) == [3]


def test_the_delay_counts_from_the_requests_arrival():
    async def scenario():
        loop = asyncio.get_running_loop()
        now = [1_000 * US]
        FakeTimer.instances.clear()
        settings = BatcherSettings(max_batch_size=8, max_queue_delay_us=500)
        scheduler, workers = _scheduler(
            [RecordingModel([])],
            settings,
            ModelStats(),
            clock=lambda: now[0],
            timer_factory=FakeTimer,
        )
        request = _responded(loop, _request(0))
        request.request.arrival_ns = (
            700 * US
        )  # decoded and validated for 300 us before it was queued
        scheduler.submit(request)
        deadline = FakeTimer.instances[0].deadline_ns
        now[0] = deadline
        FakeTimer.instances[0].callback()
        await request.responder.result()
        await _finish(scheduler, workers)
        return deadline

    assert asyncio.run(scenario()) == 1_200 * US


def test_driver_forms_the_next_batch_while_instances_are_busy():
    async def scenario():
        loop = asyncio.get_running_loop()
        log: list = []
        models = [RecordingModel(log, delay_s=0.05), RecordingModel(log, delay_s=0.05)]
        stats = ModelStats()
        scheduler, workers = _scheduler(models, BatcherSettings(max_batch_size=4), stats)
        requests = [_responded(loop, _request(i)) for i in range(10)]
        for request in requests:
            scheduler.submit(request)
        responses = [await r.responder.result() for r in requests]
        await _finish(scheduler, workers)
        return log, models, responses, stats

    log, models, responses, stats = asyncio.run(scenario())
    # Two instances take one request each; the other eight fill batches of max_batch_size 4
    # while both are busy, and go to whichever instance frees first.
    assert log[:2] == [["0"], ["1"]]
    assert sorted(len(batch) for batch in log[2:]) == [4, 4]
    assert max(m.peak for m in models) == 1 and sum(m.peak for m in models) == 2
    assert all(r.error is None for r in responses)
    assert stats.execution_count == 4 and stats.inference_count == 10
    assert stats.batch_close_reasons["no_more_requests"] == 2
    assert stats.batch_close_reasons["max_batch_size"] == 2


def test_instance_free_names_batches_that_waited_for_an_instance():
    async def scenario():
        loop = asyncio.get_running_loop()
        log: list = []
        stats = ModelStats()
        settings = BatcherSettings(max_batch_size=8)
        scheduler, workers = _scheduler([RecordingModel(log, delay_s=0.03)], settings, stats)
        requests = [_responded(loop, _request(i)) for i in range(3)]
        for request in requests:
            scheduler.submit(request)
        for request in requests:
            await request.responder.result()
        await _finish(scheduler, workers)
        return log, stats

    log, stats = asyncio.run(scenario())
    assert log == [["0"], ["1", "2"]]
    assert stats.batch_close_reasons["instance_free"] == 1


def test_preserve_ordering_delivers_in_queue_order():
    async def scenario():
        loop = asyncio.get_running_loop()
        log: list = []
        # The first batch is slow; the second, on the other instance, finishes first.
        models = [RecordingModel(log, slow={"0": 0.1}), RecordingModel(log, slow={"0": 0.1})]
        settings = BatcherSettings(max_batch_size=1, preserve_ordering=True)
        scheduler, workers = _scheduler(models, settings, ModelStats())
        delivered: list[str] = []
        requests = [_responded(loop, _request(i)) for i in range(2)]
        # The scheduler stands in for each responder (as the data plane, keep the original).
        responders = [request.responder for request in requests]
        for request, responder in zip(requests, responders):
            responder.future.add_done_callback(lambda f: delivered.append(f.result().id))
            scheduler.submit(request)
        for responder in responders:
            await responder.result()
        await _finish(scheduler, workers)
        return log, delivered

    log, delivered = asyncio.run(scenario())
    assert sorted(map(tuple, log)) == [("0",), ("1",)]
    assert delivered == ["0", "1"]


def test_without_preserve_ordering_the_fast_batch_answers_first():
    async def scenario():
        loop = asyncio.get_running_loop()
        models = [RecordingModel([], slow={"0": 0.1}), RecordingModel([], slow={"0": 0.1})]
        scheduler, workers = _scheduler(models, BatcherSettings(max_batch_size=1), ModelStats())
        delivered: list[str] = []
        requests = [_responded(loop, _request(i)) for i in range(2)]
        for request in requests:
            request.responder.future.add_done_callback(lambda f: delivered.append(f.result().id))
            scheduler.submit(request)
        for request in requests:
            await request.responder.result()
        await _finish(scheduler, workers)
        return delivered

    assert asyncio.run(scenario()) == ["1", "0"]


def test_cancelled_requests_leave_the_queue_at_once():
    async def scenario():
        loop = asyncio.get_running_loop()
        log: list = []
        stats = ModelStats()
        scheduler, workers = _scheduler(
            [RecordingModel(log, delay_s=0.2)], BatcherSettings(max_batch_size=8), stats
        )
        first, second, third = (_responded(loop, _request(i)) for i in range(3))
        for request in (first, second, third):
            scheduler.submit(request)
        assert stats.pending == 2
        second.cancellation.cancel()
        cancelled = await second.responder.result()
        first_done_then = first.responder.future.done()
        pending_after_cancel = stats.pending
        await first.responder.result()
        await third.responder.result()
        await _finish(scheduler, workers)
        return log, cancelled, first_done_then, pending_after_cancel, stats

    log, cancelled, first_done_then, pending, stats = asyncio.run(scenario())
    assert cancelled.error.grpc_code == "CANCELLED"
    assert not first_done_then  # it did not wait for the running batch
    assert pending == 1
    assert log == [["0"], ["2"]]
    assert stats.failures_by_reason["CANCELED"] == 1


def test_a_full_queue_rejects_and_counts_the_failure():
    async def scenario():
        loop = asyncio.get_running_loop()
        stats = ModelStats()
        settings = BatcherSettings(max_batch_size=8, default_policy=QueuePolicy(max_queue_size=1))
        scheduler, workers = _scheduler([RecordingModel([], delay_s=0.05)], settings, stats)
        running, queued, refused = (_responded(loop, _request(i)) for i in range(3))
        scheduler.submit(running)  # goes straight to the instance
        scheduler.submit(queued)
        with pytest.raises(UnavailableError, match="max_queue_size"):
            scheduler.submit(refused)
        await running.responder.result()
        await queued.responder.result()
        await _finish(scheduler, workers)
        return stats

    stats = asyncio.run(scenario())
    assert stats.failures_by_reason["REJECTED"] == 1
    assert stats.success.count == 2


def test_reject_timeouts_fail_promptly_with_the_real_timer():
    async def scenario():
        loop = asyncio.get_running_loop()
        policy = QueuePolicy(timeout_action=TimeoutAction.REJECT, default_timeout_us=20_000)
        settings = BatcherSettings(max_batch_size=8, default_policy=policy)
        stats = ModelStats()
        scheduler, workers = _scheduler([RecordingModel([], delay_s=0.3)], settings, stats)
        busy, waiting = _responded(loop, _request(0)), _responded(loop, _request(1))
        scheduler.submit(busy)
        scheduler.submit(waiting)
        rejected = await waiting.responder.result()
        waited = (time.monotonic_ns() - waiting.arrival_ns) / 1e9  # timeouts count from arrival
        busy_done_then = busy.responder.future.done()
        await busy.responder.result()
        await _finish(scheduler, workers)
        return rejected, waited, busy_done_then, stats

    rejected, waited, busy_done_then, stats = asyncio.run(scenario())
    assert rejected.error.grpc_code == "UNAVAILABLE" and "timed out" in rejected.error.message
    assert waited >= 0.02  # not before its timeout...
    assert not busy_done_then  # ...but long before the busy instance freed
    assert stats.failures_by_reason["REJECTED"] == 1


def test_the_real_timer_holds_a_lone_request_for_the_delay():
    async def scenario():
        loop = asyncio.get_running_loop()
        settings = BatcherSettings(max_batch_size=8, max_queue_delay_us=20_000)
        scheduler, workers = _scheduler([RecordingModel([])], settings, ModelStats())
        request = _responded(loop, _request(0))
        scheduler.submit(request)
        await request.responder.result()
        waited = (time.monotonic_ns() - request.arrival_ns) / 1e9
        await _finish(scheduler, workers)
        return waited

    waited = asyncio.run(scenario())
    assert 0.02 <= waited < 1.0


@pytest.mark.parametrize("kind", ["timerfd", "loop"])
def test_timers_fire_once_at_the_latest_deadline(kind):
    if kind == "timerfd" and not isinstance(asyncio.run(_make_timer(create_timer)), TimerFdTimer):
        pytest.skip("no timerfd on this platform")

    async def scenario():
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        timer_class = TimerFdTimer if kind == "timerfd" else LoopTimer
        timer = timer_class(loop, lambda: fired.append(time.monotonic_ns()))
        start = time.monotonic_ns()
        timer.set(start + 5_000_000)
        timer.set(start + 20_000_000)  # later: replaces the first
        assert timer.deadline_ns == start + 20_000_000
        await asyncio.sleep(0.06)
        timer.set(time.monotonic_ns() + 1_000_000)
        timer.set(0)  # cleared: never fires
        await asyncio.sleep(0.02)
        timer.set(time.monotonic_ns() - 1)  # already passed: fires at once
        await asyncio.sleep(0.01)
        timer.close()
        return start, fired

    start, fired = asyncio.run(scenario())
    assert len(fired) == 2
    assert fired[0] - start >= 20_000_000


async def _make_timer(factory):
    timer = factory(asyncio.get_running_loop(), lambda: None)
    timer.close()
    return timer


def test_the_batcher_ends_a_delay_early_by_the_timers_lead():
    batcher = _batcher(max_batch_size=8, max_queue_delay_us=500)
    batcher.timer_lead_ns = 60 * US
    _add(batcher, 0, _request(1))
    assert batcher.poll(0) is None
    assert batcher.wakeup_ns(instance_free=True) == 440 * US
    assert batcher.poll(439 * US) is None
    assert batcher.poll(440 * US).reason == "queue_delay"


def test_driver_learns_how_late_its_timer_fires():
    async def scenario():
        loop = asyncio.get_running_loop()
        now = [0]
        FakeTimer.instances.clear()
        settings = BatcherSettings(max_batch_size=8, max_queue_delay_us=400)
        scheduler, workers = _scheduler(
            [RecordingModel([])],
            settings,
            ModelStats(),
            clock=lambda: now[0],
            timer_factory=FakeTimer,
        )
        leads = []
        for round_number in range(3):
            request = _responded(loop, _request(round_number))
            start = now[0]
            scheduler.submit(request)
            (timer,) = FakeTimer.instances
            leads.append(timer.deadline_ns - start)
            now[0] = timer.deadline_ns + 80 * US  # the timer lands 80 us late
            timer.callback()
            await request.responder.result()
            await asyncio.sleep(0)  # let the instance go idle
            now[0] += 1_000 * US
        await _finish(scheduler, workers)
        return leads

    leads = asyncio.run(scenario())
    assert leads[0] == 400 * US  # nothing learnt yet
    assert leads[1] == 390 * US  # 80 us late, averaged in (1/8)
    assert leads[2] < leads[1]


def test_stop_fails_what_is_queued():
    async def scenario():
        loop = asyncio.get_running_loop()
        stats = ModelStats()
        settings = BatcherSettings(max_batch_size=8, max_queue_delay_us=10_000_000)
        scheduler, workers = _scheduler([RecordingModel([])], settings, stats)
        request = _responded(loop, _request(0))
        scheduler.submit(request)
        await scheduler.stop()
        response = await request.responder.result()
        with pytest.raises(UnavailableError):
            scheduler.submit(_responded(loop, _request(1)))
        for worker in workers:
            worker.close()
        return response, stats

    response, stats = asyncio.run(scenario())
    assert response.error.grpc_code == "UNAVAILABLE"
    assert stats.pending == 0


def test_batch_closes_are_logged_and_exported_as_metrics(caplog):
    async def scenario():
        loop = asyncio.get_running_loop()
        stats = ModelStats()
        scheduler, workers = _scheduler([RecordingModel([])], BatcherSettings(8), stats)
        request = _responded(loop, _request(0, rows=2))
        scheduler.submit(request)
        await request.responder.result()
        await _finish(scheduler, workers)
        return stats

    with caplog.at_level(logging.DEBUG, logger="trident.batching"):
        stats = asyncio.run(scenario())
    (record,) = [r for r in caplog.records if r.name == "trident.batching"]
    line = record.getMessage()
    assert "model=m" in line and "size=2" in line and "reason=no_more_requests" in line
    assert "queue_delay_us=" in line

    @dataclass
    class Loaded:
        name: str
        version: int
        stats: ModelStats

    text = render_metrics([Loaded("m", 1, stats), Loaded("plain", 1, ModelStats())])
    lines = text.splitlines()
    assert "# TYPE trident_batch_close_total counter" in lines
    assert 'trident_batch_close_total{model="m",reason="no_more_requests",version="1"} 1' in lines
    for reason in DYNAMIC_CLOSE_REASONS:
        assert f'trident_batch_close_total{{model="m",reason="{reason}",version="1"}}' in text
    assert 'model="plain",reason="queue_delay"' not in text
