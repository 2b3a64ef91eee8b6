"""The worker pool the schedulers share, through their public interface: resize while an
instance is busy, retiring an idle one, and stop waiting for a running execution. Fake instances
on a real event loop; no sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trident.backends.base import ModelInstance
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.model_config import parse_config_text
from trident.runtime.core.scheduling.base import Scheduler, SingleResponder
from trident.runtime.core.scheduling.direct import DirectScheduler
from trident.runtime.core.scheduling.dynamic_batcher import BatcherSettings, DynamicBatchScheduler
from trident.runtime.core.scheduling.sequence_batcher import SequenceBatcher
from trident.runtime.core.scheduling.sequence_config import SequenceSettings
from trident.runtime.core.stats import ModelStats
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

#: How long a test waits for something that should happen at once (generous: CI is slow).
PROMPT = 10.0


class Named(ModelInstance):
    """Answers with its own name; waits for `gate` first when given one."""

    def __init__(self, name: str, gate: threading.Event | None = None) -> None:
        self.name = name
        self.gate = gate
        self.started = threading.Event()

    def execute(self, requests, timing):
        self.started.set()
        if self.gate is not None and not self.gate.wait(PROMPT):
            raise RuntimeError("the test never opened the gate")
        out = np.array([self.name.encode()], dtype=np.object_)
        return [InferenceResponse(outputs=[Tensor("NAME", "BYTES", (1,), out)]) for _ in requests]


def _direct(workers: list[InstanceWorker], stats: ModelStats) -> Scheduler:
    return DirectScheduler("m", workers, stats, batched=True)


def _dynamic(workers: list[InstanceWorker], stats: ModelStats) -> Scheduler:
    return DynamicBatchScheduler("m", 1, workers, stats, BatcherSettings(max_batch_size=4))


def _sequence(workers: list[InstanceWorker], stats: ModelStats) -> Scheduler:
    config = parse_config_text('name: "m" max_batch_size: 4 sequence_batching { }')
    return SequenceBatcher("m", workers, stats, SequenceSettings.from_model_config(config, Path()))


TAKING = {"direct": _direct, "dynamic": _dynamic}
ALL = {**TAKING, "sequence": _sequence}
Factory = Callable[[list[InstanceWorker], ModelStats], Scheduler]

_next_sequence = iter(range(1, 1_000_000))


def _submit(scheduler: Scheduler) -> SingleResponder:
    data = np.zeros((1, 1), np.float32)
    request = InferenceRequest("m", inputs=[Tensor("X", "FP32", (1, 1), data)])
    if isinstance(scheduler, SequenceBatcher):  # one-request sequences
        request.sequence_id = next(_next_sequence)
        request.sequence_start = request.sequence_end = True
    responder = SingleResponder(asyncio.get_running_loop(), threading.get_ident())
    scheduler.submit(InFlightRequest(request, 1, responder=responder))
    return responder


async def _answer(responder: SingleResponder) -> str:
    response = await asyncio.wait_for(responder.result(), PROMPT)
    assert response.error is None, response.error
    return response.outputs[0].data[0].decode()


async def _started(instance: Named) -> None:
    """Wait (off the loop) until `instance` runs an execution."""
    assert await asyncio.to_thread(instance.started.wait, PROMPT)


@pytest.mark.parametrize("make", TAKING.values(), ids=TAKING.keys())
def test_a_busy_removed_worker_finishes_its_execution_while_the_new_one_serves(make: Factory):
    async def scenario():
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        slow = Named("old", gate)
        old, new = InstanceWorker("old", slow, loop), InstanceWorker("new", Named("new"), loop)
        scheduler = make([old], ModelStats())
        running = _submit(scheduler)
        await _started(slow)
        queued = _submit(scheduler)  # the only instance is busy: it waits
        resizing = asyncio.ensure_future(scheduler.resize([new]))
        served_by = await _answer(queued)  # the added worker took it at once
        still_waiting = not resizing.done()  # the removed one still runs its execution
        gate.set()
        first_by = await _answer(running)
        removed = await asyncio.wait_for(resizing, PROMPT)
        later_by = [await _answer(_submit(scheduler)) for _ in range(3)]
        await scheduler.stop()
        for worker in (old, new):
            worker.close()
        return served_by, still_waiting, first_by, removed == [old], later_by

    served_by, still_waiting, first_by, removed_old, later_by = asyncio.run(scenario())
    assert served_by == "new"
    assert still_waiting
    assert first_by == "old"  # its execution ended normally, response delivered
    assert removed_old
    assert later_by == ["new"] * 3  # a retired worker takes no more work


@pytest.mark.parametrize("make", TAKING.values(), ids=TAKING.keys())
def test_an_idle_removed_worker_retires_at_once(make: Factory):
    async def scenario():
        loop = asyncio.get_running_loop()
        kept, dropped = (InstanceWorker(n, Named(n), loop) for n in ("kept", "dropped"))
        scheduler = make([kept, dropped], ModelStats())
        removed = await asyncio.wait_for(scheduler.resize([kept]), PROMPT)
        served_by = [await _answer(_submit(scheduler)) for _ in range(4)]
        await scheduler.stop()
        for worker in (kept, dropped):
            worker.close()
        return removed == [dropped], served_by

    removed_dropped, served_by = asyncio.run(scenario())
    assert removed_dropped
    assert served_by == ["kept"] * 4


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_stop_fails_the_queue_at_once_and_waits_for_the_running_execution(make: Factory):
    async def scenario():
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        slow = Named("w", gate)
        worker = InstanceWorker("w", slow, loop)
        stats = ModelStats()
        scheduler = make([worker], stats)
        running = _submit(scheduler)
        await _started(slow)
        queued = _submit(scheduler)
        stopping = asyncio.ensure_future(scheduler.stop())
        queued_error = (await asyncio.wait_for(queued.result(), PROMPT)).error
        await asyncio.sleep(0.05)
        waited = not stopping.done()
        gate.set()
        await asyncio.wait_for(stopping, PROMPT)
        answered = running.future.done()  # delivered before stop returned
        first_by = await _answer(running)
        worker.close()
        return queued_error, waited, answered, first_by, stats

    queued_error, waited, answered, first_by, stats = asyncio.run(scenario())
    assert queued_error is not None and "unloaded" in queued_error.message
    assert waited
    assert answered and first_by == "w"
    assert stats.success.count == 1
    assert stats.execution_count == 1


class Pipelined(ModelInstance):
    """An async instance that takes `slots` batches at once; each waits for `gate`."""

    is_async = True

    def __init__(self, name: str, slots: int) -> None:
        self.name = name
        self.concurrent_executions = slots
        self.gate = asyncio.Event()
        self.running = 0
        self.most_running = 0

    async def execute(self, requests, timing):
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.wait_for(self.gate.wait(), PROMPT)
        finally:
            self.running -= 1
        out = np.array([self.name.encode()], dtype=np.object_)
        return [InferenceResponse(outputs=[Tensor("NAME", "BYTES", (1,), out)]) for _ in requests]


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(int(PROMPT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for the scheduler")


def test_an_instance_with_several_slots_runs_that_many_batches_at_once_and_queues_the_rest():
    async def scenario():
        instance = Pipelined("p", slots=3)
        worker = InstanceWorker("p", instance, asyncio.get_running_loop())
        scheduler = _direct([worker], ModelStats())
        responders = [_submit(scheduler) for _ in range(5)]
        await _until(lambda: instance.running == 3)
        queued = scheduler.pending_count()
        instance.gate.set()
        answers = [await _answer(responder) for responder in responders]
        await scheduler.stop()
        return worker.slots, instance.most_running, queued, answers

    slots, most_running, queued, answers = asyncio.run(scenario())
    assert slots == 3 and most_running == 3 and queued == 2
    assert answers == ["p"] * 5


def test_requests_spread_over_instances_before_any_takes_a_second_slot():
    async def scenario():
        loop = asyncio.get_running_loop()
        first, second = Pipelined("a", slots=4), Pipelined("b", slots=4)
        workers = [InstanceWorker(i.name, i, loop) for i in (first, second)]
        scheduler = _direct(workers, ModelStats())
        responders = [_submit(scheduler) for _ in range(2)]
        await _until(lambda: first.running + second.running == 2)
        spread = (first.running, second.running)
        first.gate.set()
        second.gate.set()
        for responder in responders:
            await _answer(responder)
        await scheduler.stop()
        return spread

    assert asyncio.run(scenario()) == (1, 1)


@pytest.mark.parametrize("make", TAKING.values(), ids=TAKING.keys())
def test_a_removed_instance_with_several_busy_slots_retires_once_all_of_them_ended(
    make: Factory,
):
    async def scenario():
        loop = asyncio.get_running_loop()
        old_instance = Pipelined("old", slots=2)
        old = InstanceWorker("old", old_instance, loop)
        new = InstanceWorker("new", Named("new"), loop)
        scheduler = make([old], ModelStats())
        running = [_submit(scheduler)]
        await _until(lambda: old_instance.running == 1)
        running.append(_submit(scheduler))  # the second slot
        await _until(lambda: old_instance.running == 2)
        resizing = asyncio.ensure_future(scheduler.resize([new]))
        served_by = await _answer(_submit(scheduler))
        waited = not resizing.done()
        old_instance.gate.set()
        first_by = [await _answer(responder) for responder in running]
        removed = await asyncio.wait_for(resizing, PROMPT)
        later_by = [await _answer(_submit(scheduler)) for _ in range(3)]
        await scheduler.stop()
        new.close()
        return served_by, waited, first_by, removed == [old], later_by

    served_by, waited, first_by, removed_old, later_by = asyncio.run(scenario())
    assert served_by == "new" and waited
    assert first_by == ["old", "old"] and removed_old
    assert later_by == ["new"] * 3
