"""BLS from Python models (copied from tests/models to tmp_path): requests to other models through
fake `infer` / `stream_infer` callables in the InstanceContext, with the model running on a worker
thread or on the loop."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from tests.helpers import copy_model
from trident.backends.base import ComputeTiming
from trident.backends.python.backend import PythonBackend
from trident.runtime.errors import NotFoundError, UnsupportedError
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

from .test_python_backend_support import LoopThread, loop_thread, make_context, make_request, output

SEEN: list[InferenceRequest] = []


async def fake_infer(request: InferenceRequest) -> InferenceResponse:
    """A 'doubler' model; 'missing' is not loaded; 'streamer' is decoupled."""
    SEEN.append(request)
    await asyncio.sleep(0)
    if request.model_name == "missing":
        raise NotFoundError("Request for unknown model: 'missing' is not found")
    if request.model_name == "streamer":
        raise UnsupportedError("model 'streamer' is decoupled")
    data = request.inputs[0].data
    return InferenceResponse(
        outputs=[Tensor("DOUBLED", "FP32", data.shape, data * 2)], parameters={"via": "fake"}
    )


async def fake_stream_infer(request: InferenceRequest):
    SEEN.append(request)
    if request.model_name == "missing":
        raise NotFoundError("Request for unknown model: 'missing' is not found")
    count = int(request.inputs[0].data[0])
    for index in range(count):
        await asyncio.sleep(0)
        value = np.array([index], np.int32)
        yield InferenceResponse(outputs=[Tensor("INDEX", "INT32", (1,), value)], final=False)
    yield InferenceResponse(final=True)


@pytest.fixture
def loop():
    SEEN.clear()
    yield from loop_thread()


def instance_of(tmp_path, name, loop: LoopThread):
    """tests/models/<name>, instantiated with the fake infer / stream_infer callables."""
    model_dir = copy_model(tmp_path, name)
    context = make_context(
        model_dir, loop=loop.loop, infer=fake_infer, stream_infer=fake_stream_infer
    )
    return PythonBackend().create_instance(context)


def run_sync(instance, inputs):
    (response,) = instance.execute([make_request("caller", inputs)], ComputeTiming())
    return response


def test_sync_exec_runs_the_request_through_the_server(tmp_path, loop: LoopThread):
    instance = instance_of(tmp_path, "py_bls_exec_doubler", loop)
    response = run_sync(instance, {"X": np.array([1.0, 2.5], np.float32)})
    np.testing.assert_array_equal(output(response, "DOUBLED"), [2.0, 5.0])
    (inner,) = SEEN
    assert inner.model_name == "doubler" and inner.model_version == 2
    assert (inner.id, inner.sequence_id, inner.sequence_start, inner.sequence_end) == (
        "inner",
        5,
        True,
        False,
    )
    assert [o.name for o in inner.outputs] == ["DOUBLED"]
    assert inner.parameters == {"k": "v", "n": 3}
    assert inner.timeout_us == 1000
    assert (inner.inputs[0].name, inner.inputs[0].datatype, inner.inputs[0].shape) == (
        "X",
        "FP32",
        (2,),
    )
    assert instance._model.response_parameters == {"via": "fake"}


def test_bls_failures_come_back_as_error_responses(tmp_path, loop: LoopThread):
    instance = instance_of(tmp_path, "py_bls_error_passthrough", loop)
    response = run_sync(instance, {"X": np.zeros(1, np.float32)})
    assert instance._model.seen == (
        True,
        2,  # TritonError.NOT_FOUND
        "Request for unknown model: 'missing' is not found",
        [],
    )
    assert isinstance(response.error, NotFoundError)


def test_decoupled_exec_iterates_the_responses_as_they_come(tmp_path, loop: LoopThread):
    instance = instance_of(tmp_path, "py_bls_decoupled_iterate", loop)
    response = run_sync(instance, {"X": np.zeros(1, np.float32)})
    assert list(output(response, "VALUES")) == ["0", "1", "2", "final"]


def test_async_exec_from_an_async_execute(tmp_path, loop: LoopThread):
    instance = instance_of(tmp_path, "py_bls_async_gather", loop)
    request = make_request("caller", {"X": np.array([1.5], np.float32)})
    (response,) = loop.run(instance.execute([request], ComputeTiming()))
    np.testing.assert_array_equal(output(response, "TOTAL"), [6.0])
    assert instance._model.streamed == [1, 1, 0]
    assert "use `await request.async_exec()` instead" in instance._model.blocking_error


def test_async_exec_from_a_loop_of_the_models_own(tmp_path, loop: LoopThread):
    # A sync execute that runs its own event loop (asyncio.run) still reaches the server.
    instance = instance_of(tmp_path, "py_bls_own_event_loop", loop)
    response = run_sync(instance, {"X": np.array([4.0], np.float32)})
    np.testing.assert_array_equal(output(response, "DOUBLED"), [8.0])
    assert len(SEEN) == 2


def test_bls_from_a_thread_the_model_started_needs_its_context(tmp_path, loop: LoopThread):
    instance = instance_of(tmp_path, "py_bls_thread_context", loop)
    run_sync(instance, {"X": np.array([1.0], np.float32)})
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and thread is not loop._thread:
            thread.join(5)
    assert instance._model.results["copied"] is False
    assert "contextvars.copy_context().run" in instance._model.results["plain"]


def test_bls_outside_any_model_is_a_clear_error():
    import triton_python_backend_utils as pb_utils

    request = pb_utils.InferenceRequest(
        model_name="doubler",
        requested_output_names=["DOUBLED"],
        inputs=[pb_utils.Tensor("X", np.zeros(1, np.float32))],
    )
    with pytest.raises(pb_utils.TritonModelException, match="only be made while a model"):
        request.exec()
    with pytest.raises(pb_utils.TritonModelException, match="needs model_name"):
        pb_utils.InferenceRequest(model_name="m", inputs=[])


def test_bls_response_iterator_cancel_ends_the_stream(tmp_path, loop: LoopThread):
    async def endless_stream(request: InferenceRequest):
        index = 0
        while not request.cancellation.cancelled:
            await asyncio.sleep(0.001)
            yield InferenceResponse(
                outputs=[Tensor("INDEX", "INT32", (1,), np.array([index], np.int32))],
                final=False,
            )
            index += 1

    model_dir = copy_model(tmp_path, "py_bls_stream_cancel")
    context = make_context(model_dir, loop=loop.loop, infer=fake_infer, stream_infer=endless_stream)
    instance = PythonBackend().create_instance(context)
    run_sync(instance, {"X": np.zeros(1, np.float32)})
    assert all(r.has_error() or r.output_tensors() for r in instance._model.rest)


def test_request_parameters_of_bls_requests_are_json(tmp_path):
    import triton_python_backend_utils as pb_utils

    request = pb_utils.InferenceRequest(
        model_name="m",
        inputs=[],
        requested_output_names=[],
        parameters={"a": 1, "b": "x", "c": True},
    )
    assert json.loads(request.parameters()) == {"a": 1, "b": "x", "c": True}
    assert request.correlation_id() == 0 and request.flags() == 0
    with pytest.raises(pb_utils.TritonModelException, match="get_response_sender"):
        request.get_response_sender()
    with pytest.raises(pb_utils.TritonModelException, match="parameters values"):
        pb_utils.InferenceRequest(
            model_name="m", inputs=[], requested_output_names=[], parameters={"a": [1]}
        )


class FakeControl:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def load_model(self, name, config_json="", files=None):
        self.calls.append(("load", name, config_json, files))
        if name == "bad":
            raise NotFoundError("failed to load 'bad'")

    async def unload_model(self, name, unload_dependents=False):
        self.calls.append(("unload", name, unload_dependents))

    def model_ready(self, name, version=""):
        self.calls.append(("ready", name, version))
        return name == "loaded"


def test_model_loading_api(tmp_path, loop: LoopThread):
    control = FakeControl()
    model_dir = copy_model(tmp_path, "py_model_control_calls")
    context = make_context(model_dir, loop=loop.loop, extras={"model_control": control})
    instance = PythonBackend().create_instance(context)
    run_sync(instance, {"X": np.zeros(1, np.float32)})
    assert control.calls == [
        ("load", "other", '{"backend": "python"}', {"file:1/model.py": b"x"}),
        ("unload", "other", True),
        ("ready", "loaded", ""),
        ("ready", "other", "2"),
        ("load", "bad", "", {}),
    ]
    assert instance._model.ready == (True, False)
    assert instance._model.error == "failed to load 'bad'"


def test_model_loading_api_needs_the_server_to_offer_it(tmp_path, loop: LoopThread):
    instance = instance_of(tmp_path, "py_model_control_unavailable", loop)
    with pytest.raises(Exception, match=r"model loading API .* is not available"):
        run_sync(instance, {"X": np.zeros(1, np.float32)})
