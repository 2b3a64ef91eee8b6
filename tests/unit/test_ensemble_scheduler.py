"""EnsembleScheduler with a fake data plane: steps are coroutines, so we can watch which run
together, what tensors they get, and how failures and statistics come out. No sockets."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.model_config import parse_config_text
from trident.runtime.core.scheduling.base import SingleResponder
from trident.runtime.core.scheduling.ensemble import EnsembleGraph, EnsembleScheduler
from trident.runtime.core.stats import ModelStats
from trident.runtime.core.validation import tensor_specs
from trident.runtime.errors import (
    InvalidArgumentError,
    ModelExecutionError,
    NotFoundError,
    UnavailableError,
)
from trident.runtime.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

from .test_ensemble_graph import DIAMOND


class FakeDataPlane:
    """Runs "models" a, b, c, d: a adds 1, b doubles, c negates, d adds L and R. Records calls
    and how many steps overlap."""

    def __init__(self, delay: float = 0.02, fail: str = "") -> None:
        self.delay = delay
        self.fail = fail
        self.calls: list[InferenceRequest] = []
        self.running = 0
        self.peak = 0

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        self.calls.append(request)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
            if request.model_name == self.fail:
                raise ModelExecutionError(f"model '{self.fail}' exploded")
            inputs = {t.name: t.data for t in request.inputs}
            if request.model_name == "a":
                out = inputs["X"] + 1
            elif request.model_name == "b":
                out = inputs["X"] * 2
            elif request.model_name == "c":
                out = -inputs["X"]
            else:
                out = inputs["L"] + inputs["R"]
            return InferenceResponse(outputs=[Tensor("Y", "FP32", out.shape, out)])
        finally:
            self.running -= 1


def _lookup(name: str, version: int) -> SimpleNamespace:
    if name not in "abcd":
        raise NotFoundError(name)
    inputs = "LR" if name == "d" else "X"
    config = parse_config_text(
        f'name: "{name}" max_batch_size: 0 input ['
        + ",".join(f'{{ name: "{i}" data_type: TYPE_FP32 dims: [ 4 ] }}' for i in inputs)
        + "]"
    )
    return SimpleNamespace(max_batch_size=0, input_specs=tensor_specs(list(config.input)))


def _request(loop, values, **kwargs) -> InFlightRequest:
    data = np.array(values, dtype=np.float32)
    request = InferenceRequest(
        model_name="ens", inputs=[Tensor("IN", "FP32", data.shape, data)], **kwargs
    )
    return InFlightRequest(request, 1, responder=SingleResponder(loop, threading.get_ident()))


def _run(scenario):
    return asyncio.run(scenario())


def _scheduler(plane: FakeDataPlane, stats: ModelStats, text: str = DIAMOND) -> EnsembleScheduler:
    graph = EnsembleGraph.from_config(parse_config_text(text))
    return EnsembleScheduler(graph, stats, plane.infer, _lookup, batched=False)


def test_tensors_flow_through_a_fan_out_and_fan_in():
    plane, stats = FakeDataPlane(), ModelStats()

    async def scenario():
        loop = asyncio.get_running_loop()
        scheduler = _scheduler(plane, stats)
        request = _request(loop, [1, 2, 3, 4], id="r1", parameters={"k": 5}, priority=2)
        scheduler.submit(request)
        response = await request.responder.result()
        await scheduler.stop()
        return response

    response = _run(scenario)
    assert response.error is None
    (out,) = response.outputs
    assert out.name == "OUT"
    # a: x+1; b: 2(x+1); c: -(x+1); d: b + c = x+1
    np.testing.assert_array_equal(out.data, np.array([2, 3, 4, 5], np.float32))
    assert [c.model_name for c in plane.calls] == ["a", "b", "c", "d"]
    assert plane.peak == 2  # b and c ran at the same time
    step_c = plane.calls[2]
    assert step_c.model_version == 2
    assert [t.name for t in step_c.inputs] == ["X"]
    assert [o.name for o in step_c.outputs] == ["Y"]
    assert step_c.id == "r1" and step_c.parameters == {"k": 5} and step_c.priority == 2
    assert stats.success.count == 1
    assert stats.execution_count == 1 and stats.inference_count == 1
    assert stats.fail.count == 0


def test_a_failing_step_fails_the_request_naming_the_step():
    plane, stats = FakeDataPlane(fail="c"), ModelStats()

    async def scenario():
        loop = asyncio.get_running_loop()
        scheduler = _scheduler(plane, stats)
        request = _request(loop, [1, 2, 3, 4])
        scheduler.submit(request)
        response = await request.responder.result()
        await scheduler.stop()
        return response

    response = _run(scenario)
    assert isinstance(response.error, ModelExecutionError)  # same kind: same status codes
    assert response.error.message == "in ensemble 'ens', step 'c': model 'c' exploded"
    assert "d" not in [c.model_name for c in plane.calls]  # nothing starts after a failure
    assert stats.failures_by_reason["OTHER"] == 1
    assert stats.success.count == 0


def test_requesting_one_output_runs_only_the_steps_it_needs():
    text = DIAMOND.replace(
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]',
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] },'
        ' { name: "C_OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]',
    )
    plane, stats = FakeDataPlane(), ModelStats()

    async def scenario():
        loop = asyncio.get_running_loop()
        scheduler = _scheduler(plane, stats, text)
        request = _request(loop, [1, 2, 3, 4], outputs=[RequestedOutput("C_OUT")])
        scheduler.submit(request)
        response = await request.responder.result()
        await scheduler.stop()
        return response

    response = _run(scenario)
    assert [c.model_name for c in plane.calls] == ["a", "c"]
    assert [t.name for t in response.outputs] == ["C_OUT"]
    np.testing.assert_array_equal(response.outputs[0].data, [-2, -3, -4, -5])


def test_a_cancelled_request_runs_nothing():
    plane, stats = FakeDataPlane(), ModelStats()

    async def scenario():
        loop = asyncio.get_running_loop()
        scheduler = _scheduler(plane, stats)
        request = _request(loop, [1, 2, 3, 4])
        request.cancellation.cancel()
        scheduler.submit(request)
        response = await request.responder.result()
        await scheduler.stop()
        return response

    response = _run(scenario)
    assert response.error.grpc_code == "CANCELLED"
    assert plane.calls == []
    assert stats.failures_by_reason["CANCELED"] == 1


def test_stop_waits_for_running_requests_then_refuses_new_ones():
    plane, stats = FakeDataPlane(delay=0.05), ModelStats()

    async def scenario():
        loop = asyncio.get_running_loop()
        scheduler = _scheduler(plane, stats)
        request = _request(loop, [1, 2, 3, 4])
        scheduler.submit(request)
        await asyncio.sleep(0)
        await scheduler.stop()
        assert request.responder.future.done()  # stop returned after the request finished
        with pytest.raises(UnavailableError):
            scheduler.submit(_request(loop, [1, 2, 3, 4]))
        return request.responder.future.result()

    assert _run(scenario).error is None


def test_a_batched_tensor_loses_its_batch_dim_for_a_non_batching_model():
    # The ensemble batches (IN is [1,4]); model a does not (X is [4]): Triton strips the
    # batch-1 dim, and the output comes back without it.
    text = DIAMOND.replace("max_batch_size: 0", "max_batch_size: 4")
    plane, stats = FakeDataPlane(), ModelStats()

    async def scenario():
        loop = asyncio.get_running_loop()
        graph = EnsembleGraph.from_config(parse_config_text(text))
        scheduler = EnsembleScheduler(graph, stats, plane.infer, _lookup, batched=True)
        request = _request(loop, [[1, 2, 3, 4]])
        scheduler.submit(request)
        response = await request.responder.result()
        await scheduler.stop()
        return response

    response = _run(scenario)
    assert response.error is None
    assert plane.calls[0].inputs[0].shape == (4,)
    assert stats.inference_count == 1


def test_an_invalid_step_request_keeps_its_error_kind():
    class Rejecting(FakeDataPlane):
        async def infer(self, request):
            raise InvalidArgumentError("unexpected shape for input 'X'")

    plane, stats = Rejecting(), ModelStats()

    async def scenario():
        loop = asyncio.get_running_loop()
        scheduler = _scheduler(plane, stats)
        request = _request(loop, [1, 2, 3, 4])
        scheduler.submit(request)
        response = await request.responder.result()
        await scheduler.stop()
        return response

    error = _run(scenario).error
    assert isinstance(error, InvalidArgumentError) and error.http_status == 400
    assert error.message.startswith("in ensemble 'ens', step 'a': unexpected shape")
