"""Inline execution: short synchronous executions move onto the event loop, and back."""

import asyncio
import threading
import time

from trident.backends.base import ModelInstance, MustRunOnWorkerThread
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.types import InferenceRequest, InferenceResponse


class Recorder(ModelInstance):
    may_run_inline = True

    def __init__(self, sleep_s: float = 0.0, needs_thread_after: int = -1) -> None:
        self.threads: list[int] = []
        self.sleep_s = sleep_s
        self.needs_thread_after = needs_thread_after
        self.calls = 0
        self.spin_s = 0.0

    def execute(self, requests, timing):
        self.calls += 1
        if self.spin_s:
            deadline = time.thread_time() + self.spin_s
            while time.thread_time() < deadline:
                pass
        on_loop = threading.current_thread() is threading.main_thread()
        if on_loop and 0 <= self.needs_thread_after < self.calls:
            raise MustRunOnWorkerThread
        self.threads.append(threading.get_ident())
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return [InferenceResponse() for _ in requests]


def test_short_executions_move_inline():
    instance = Recorder()
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)

    async def scenario():
        for _ in range(40):
            await worker.execute([InferenceRequest(model_name="m")])

    loop.run_until_complete(scenario())
    main = threading.get_ident()
    assert instance.threads[0] != main  # starts on its own thread
    assert instance.threads[-1] == main  # then runs on the loop's thread
    assert worker.runs_inline
    worker.close()
    loop.close()


def test_instances_that_do_not_allow_it_never_run_inline():
    instance = Recorder()
    instance.may_run_inline = False
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 40))
    assert threading.get_ident() not in instance.threads
    worker.close()
    loop.close()


async def _many(worker: InstanceWorker, times: int) -> None:
    for _ in range(times):
        await worker.execute([InferenceRequest(model_name="m")])


def test_a_long_computation_inline_returns_the_instance_to_its_thread():
    instance = Recorder()
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 20))
    assert worker.runs_inline
    instance.spin_s = 0.015  # 15 ms of CPU: past 10 x the threshold
    loop.run_until_complete(_many(worker, 1))
    assert not worker.runs_inline
    worker.close()
    loop.close()


def test_a_model_that_blocks_without_using_the_cpu_stays_on_its_thread():
    instance = Recorder(sleep_s=0.01)  # 10 ms of sleep: next to no CPU time, 10 x the threshold
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 24))
    assert not worker.runs_inline
    assert threading.get_ident() not in instance.threads
    worker.close()
    loop.close()


class _TakesThreshold(Recorder):
    inline_threshold_ns = 50_000_000  # 50 ms


def test_an_instance_may_set_its_own_threshold():
    instance = _TakesThreshold(sleep_s=0.001)  # 1 ms of wall time: over the worker's 0.1 ms
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=100_000)
    loop.run_until_complete(_many(worker, 24))
    assert worker.runs_inline
    worker.close()
    loop.close()


def test_a_long_inline_execution_returns_the_instance_to_its_thread():
    instance = Recorder()
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 20))
    assert worker.runs_inline
    instance.sleep_s = 0.08  # 80 ms of blocking: past 50 x the 1 ms threshold
    loop.run_until_complete(_many(worker, 1))
    instance.sleep_s = 0.0
    assert not worker.runs_inline
    loop.run_until_complete(_many(worker, 40))
    assert not worker.runs_inline  # for good
    assert instance.threads[-1] != threading.get_ident()
    worker.close()
    loop.close()


def test_a_batch_handed_over_before_it_ran_runs_on_the_thread():
    instance = Recorder(needs_thread_after=0)
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 16))
    assert worker.runs_inline
    responses, *_ = loop.run_until_complete(worker.execute([InferenceRequest(model_name="m")]))
    assert len(responses) == 1
    assert not worker.runs_inline
    assert instance.threads[-1] != threading.get_ident()
    worker.close()
    loop.close()


def test_one_of_several_instances_never_runs_inline():
    instance = Recorder()
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 20))
    assert worker.runs_inline
    worker.allow_inline(False)  # the model manager: the model now has several instances
    assert not worker.runs_inline
    loop.run_until_complete(_many(worker, 40))
    assert not worker.runs_inline
    assert threading.get_ident() not in instance.threads[-40:]
    worker.close()
    loop.close()
