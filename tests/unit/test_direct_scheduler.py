"""The direct scheduler with fake instances: no sockets, a real event loop."""

import asyncio
import threading
import time

import numpy as np
import pytest

from trident.backends.base import ModelInstance
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.scheduling.base import SingleResponder
from trident.runtime.core.scheduling.direct import DirectScheduler
from trident.runtime.core.stats import ModelStats
from trident.runtime.errors import ModelExecutionError
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor


class SlowEcho(ModelInstance):
    """Sleeps, records how many executions overlap, echoes its input."""

    def __init__(self, tracker: dict) -> None:
        self.tracker = tracker

    def execute(self, requests, timing):
        with self.tracker["lock"]:
            self.tracker["running"] += 1
            self.tracker["peak"] = max(self.tracker["peak"], self.tracker["running"])
        time.sleep(0.05)
        with self.tracker["lock"]:
            self.tracker["running"] -= 1
        if requests[0].parameters.get("boom"):
            raise RuntimeError("model exploded")
        return [InferenceResponse(outputs=list(r.inputs)) for r in requests]


def _request(loop, value, **parameters):
    request = InferenceRequest(
        model_name="m",
        inputs=[Tensor("X", "FP32", (1,), np.array([value], np.float32))],
        parameters=parameters,
    )
    return InFlightRequest(request, 1, responder=SingleResponder(loop, threading.get_ident()))


def _scheduler(loop, count, tracker, stats):
    workers = [InstanceWorker(f"w{i}", SlowEcho(tracker), loop) for i in range(count)]
    return DirectScheduler("m", workers, stats, batched=False), workers


@pytest.mark.parametrize("instances", [1, 3])
def test_instances_run_concurrently_up_to_their_count(instances):
    async def scenario():
        loop = asyncio.get_running_loop()
        tracker = {"lock": threading.Lock(), "running": 0, "peak": 0}
        stats = ModelStats()
        scheduler, workers = _scheduler(loop, instances, tracker, stats)
        requests = [_request(loop, float(i)) for i in range(6)]
        for request in requests:
            scheduler.submit(request)
        responses = [await r.responder.result() for r in requests]
        await scheduler.stop()
        for worker in workers:
            worker.close()
        return tracker["peak"], responses, stats

    peak, responses, stats = asyncio.run(scenario())
    assert peak == instances
    assert [float(r.outputs[0].data[0]) for r in responses] == [0, 1, 2, 3, 4, 5]
    assert stats.success.count == 6
    assert stats.execution_count == 6
    assert stats.inference_count == 6
    assert stats.queue.ns > 0


def test_a_raising_model_fails_only_its_request():
    async def scenario():
        loop = asyncio.get_running_loop()
        tracker = {"lock": threading.Lock(), "running": 0, "peak": 0}
        stats = ModelStats()
        scheduler, workers = _scheduler(loop, 1, tracker, stats)
        bad, good = _request(loop, 1.0, boom=True), _request(loop, 2.0)
        scheduler.submit(bad)
        scheduler.submit(good)
        results = await bad.responder.result(), await good.responder.result()
        await scheduler.stop()
        workers[0].close()
        return results, stats

    (bad, good), stats = asyncio.run(scenario())
    assert isinstance(bad.error, ModelExecutionError)
    assert "model exploded" in bad.error.message
    assert good.error is None
    assert stats.failures_by_reason["BACKEND"] == 1
    assert stats.success.count == 1


def test_cancelled_and_timed_out_requests_do_not_run():
    async def scenario():
        loop = asyncio.get_running_loop()
        tracker = {"lock": threading.Lock(), "running": 0, "peak": 0}
        stats = ModelStats()
        scheduler, workers = _scheduler(loop, 1, tracker, stats)
        first = _request(loop, 1.0)
        cancelled = _request(loop, 2.0)
        timed_out = _request(loop, 3.0)
        timed_out.request.timeout_us = 1000  # 1 ms, while the first request takes 50 ms
        for request in (first, cancelled, timed_out):
            scheduler.submit(request)
        cancelled.cancellation.cancel()
        results = [await r.responder.result() for r in (first, cancelled, timed_out)]
        await scheduler.stop()
        workers[0].close()
        return results, stats

    (first, cancelled, timed_out), stats = asyncio.run(scenario())
    assert first.error is None
    assert cancelled.error.grpc_code == "CANCELLED"
    assert "timed out" in timed_out.error.message
    assert stats.failures_by_reason == {"REJECTED": 1, "CANCELED": 1, "BACKEND": 0, "OTHER": 0}
    assert stats.execution_count == 1
