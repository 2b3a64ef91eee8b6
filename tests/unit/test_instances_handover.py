"""An inline execution that hands its batch over to the worker thread is finished there, never
executed again; an instance that withdraws `may_run_inline` stays on its thread."""

import asyncio
import threading

from trident.backends.base import ModelInstance, MustRunOnWorkerThread
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.types import InferenceRequest, InferenceResponse


class HandsOver(ModelInstance):
    """Counts the batches it starts; once `hand_over` is set, an inline batch (the core calls
    `execute_inline` for those) is started on the loop and handed to the thread, where
    `execute` must finish that same batch."""

    may_run_inline = True

    def __init__(self) -> None:
        self.started = 0
        self.finished_on_thread = 0
        self.hand_over = False
        self._handed: list[InferenceRequest] | None = None

    def execute(self, requests, timing):
        assert threading.current_thread() is not threading.main_thread()
        if self._handed is not None:
            assert all(a is b for a, b in zip(self._handed, requests, strict=True))
            self._handed = None
            self.finished_on_thread += 1
            return [InferenceResponse() for _ in requests]
        self.started += 1
        return [InferenceResponse() for _ in requests]

    def execute_inline(self, requests, timing):
        assert threading.current_thread() is threading.main_thread()
        self.started += 1
        if self.hand_over:
            self._handed = requests
            raise MustRunOnWorkerThread
        return [InferenceResponse() for _ in requests]


async def _many(worker: InstanceWorker, times: int) -> None:
    for _ in range(times):
        await worker.execute([InferenceRequest(model_name="m")])


def test_a_batch_handed_over_by_execute_is_finished_on_the_thread_once():
    instance = HandsOver()
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 20))
    assert worker.runs_inline
    instance.hand_over = True
    started = instance.started
    outcome = loop.run_until_complete(worker.execute([InferenceRequest(model_name="m")]))
    responses = outcome.responses
    assert len(responses) == 1
    assert instance.started == started + 1  # started once, inline
    assert instance.finished_on_thread == 1  # and finished on the thread
    assert not worker.runs_inline
    loop.run_until_complete(_many(worker, 20))
    assert not worker.runs_inline  # for good
    worker.close()
    loop.close()


def test_a_batch_handed_over_by_execute_now_is_finished_by_execute():
    """The schedulers' path: `execute_now` answers None, the scheduler then awaits `execute`
    for the same requests."""
    instance = HandsOver()
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 20))
    assert worker.runs_inline
    instance.hand_over = True
    request = InferenceRequest(model_name="m")

    async def scheduler_like() -> int:
        assert worker.execute_now([request]) is None
        responses = (await worker.execute([request])).responses
        return len(responses)

    assert loop.run_until_complete(scheduler_like()) == 1
    assert instance.finished_on_thread == 1
    assert not worker.runs_inline
    worker.close()
    loop.close()


def test_an_instance_that_withdraws_inline_stays_on_its_thread():
    instance = HandsOver()
    loop = asyncio.new_event_loop()
    worker = InstanceWorker("w", instance, loop, inline_threshold_ns=1_000_000)
    loop.run_until_complete(_many(worker, 4))
    instance.may_run_inline = False  # e.g. a Python model that called the server
    loop.run_until_complete(_many(worker, 40))
    assert not worker.runs_inline
    worker.close()
    loop.close()
