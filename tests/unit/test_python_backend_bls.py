"""BLS from Python models: requests to other models through fake `infer` / `stream_infer`
callables in the InstanceContext, with the model running on a worker thread or on the loop."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from trident.backends.base import ComputeTiming
from trident.backends.python.backend import PythonBackend
from trident.runtime.errors import NotFoundError, UnsupportedError
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

from .test_python_backend_support import LoopThread, loop_thread, make_context, make_request, output
from .test_python_backend_support import write_model as write

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


def instance_of(tmp_path, name, source, loop: LoopThread, config=""):
    model_dir = write(tmp_path, name, source, config)
    context = make_context(
        model_dir, loop=loop.loop, infer=fake_infer, stream_infer=fake_stream_infer
    )
    return PythonBackend().create_instance(context)


def run_sync(instance, inputs):
    (response,) = instance.execute([make_request("caller", inputs)], ComputeTiming())
    return response


def test_sync_exec_runs_the_request_through_the_server(tmp_path, loop: LoopThread):
    source = """
        import json
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    x = pb_utils.get_input_tensor_by_name(request, "X")
                    bls = pb_utils.InferenceRequest(
                        model_name="doubler", requested_output_names=["DOUBLED"], inputs=[x],
                        request_id="inner", correlation_id=5, model_version=2,
                        flags=pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START, timeout=1000,
                        parameters={"k": "v", "n": 3})
                    answer = bls.exec()
                    assert not answer.has_error(), answer.error().message()
                    doubled = pb_utils.get_output_tensor_by_name(answer, "DOUBLED")
                    self.response_parameters = json.loads(answer.parameters())
                    responses.append(pb_utils.InferenceResponse([doubled]))
                return responses
    """
    instance = instance_of(tmp_path, "caller", source, loop)
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
    source = """
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                x = pb_utils.Tensor("X", np.zeros(1, np.float32))
                answer = pb_utils.InferenceRequest(
                    model_name="missing", requested_output_names=[], inputs=[x]).exec()
                self.seen = (answer.has_error(), answer.error().code(), answer.error().message(),
                             answer.output_tensors())
                return [pb_utils.InferenceResponse(error=answer.error()) for _ in requests]
    """
    instance = instance_of(tmp_path, "caller", source, loop)
    response = run_sync(instance, {"X": np.zeros(1, np.float32)})
    assert instance._model.seen == (
        True,
        2,  # TritonError.NOT_FOUND
        "Request for unknown model: 'missing' is not found",
        [],
    )
    assert isinstance(response.error, NotFoundError)


def test_decoupled_exec_iterates_the_responses_as_they_come(tmp_path, loop: LoopThread):
    source = """
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                count = pb_utils.Tensor("COUNT", np.array([3], np.int32))
                request = pb_utils.InferenceRequest(
                    model_name="streamer", requested_output_names=["INDEX"], inputs=[count])
                values = []
                for response in request.exec(decoupled=True):
                    assert not response.has_error()
                    if response.output_tensors():
                        values.append(int(response.output_tensors()[0].as_numpy()[0]))
                    else:
                        values.append("final")
                out = pb_utils.Tensor("VALUES", np.array([str(v) for v in values], dtype=object))
                return [pb_utils.InferenceResponse([out]) for _ in requests]
    """
    instance = instance_of(tmp_path, "caller", source, loop)
    response = run_sync(instance, {"X": np.zeros(1, np.float32)})
    assert list(output(response, "VALUES")) == ["0", "1", "2", "final"]


def test_async_exec_from_an_async_execute(tmp_path, loop: LoopThread):
    source = """
        import asyncio
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            async def execute(self, requests):
                x = pb_utils.get_input_tensor_by_name(requests[0], "X")
                single = pb_utils.InferenceRequest(
                    model_name="doubler", requested_output_names=["DOUBLED"], inputs=[x])
                count = pb_utils.Tensor("COUNT", np.array([2], np.int32))
                stream = pb_utils.InferenceRequest(
                    model_name="streamer", requested_output_names=["INDEX"], inputs=[count])
                first, second, streamed = await asyncio.gather(
                    single.async_exec(), single.async_exec(), stream.async_exec(decoupled=True))
                try:
                    single.exec()
                except pb_utils.TritonModelException as exc:
                    self.blocking_error = str(exc)
                total = (pb_utils.get_output_tensor_by_name(first, "DOUBLED").as_numpy()
                         + pb_utils.get_output_tensor_by_name(second, "DOUBLED").as_numpy())
                self.streamed = [len(r.output_tensors()) for r in streamed]
                return [pb_utils.InferenceResponse([pb_utils.Tensor("TOTAL", total)])]
    """
    instance = instance_of(tmp_path, "caller", source, loop)
    request = make_request("caller", {"X": np.array([1.5], np.float32)})
    (response,) = loop.run(instance.execute([request], ComputeTiming()))
    np.testing.assert_array_equal(output(response, "TOTAL"), [6.0])
    assert instance._model.streamed == [1, 1, 0]
    assert "use `await request.async_exec()` instead" in instance._model.blocking_error


def test_async_exec_from_a_loop_of_the_models_own(tmp_path, loop: LoopThread):
    # A sync execute that runs its own event loop (asyncio.run) still reaches the server.
    source = """
        import asyncio
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                x = pb_utils.get_input_tensor_by_name(requests[0], "X")
                request = pb_utils.InferenceRequest(
                    model_name="doubler", requested_output_names=["DOUBLED"], inputs=[x])

                async def twice():
                    return await asyncio.gather(request.async_exec(), request.async_exec())

                first, second = asyncio.run(twice())
                out = pb_utils.get_output_tensor_by_name(first, "DOUBLED")
                return [pb_utils.InferenceResponse([out]) for _ in requests]
    """
    instance = instance_of(tmp_path, "caller", source, loop)
    response = run_sync(instance, {"X": np.array([4.0], np.float32)})
    np.testing.assert_array_equal(output(response, "DOUBLED"), [8.0])
    assert len(SEEN) == 2


def test_bls_from_a_thread_the_model_started_needs_its_context(tmp_path, loop: LoopThread):
    source = """
        import contextvars
        import threading
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                x = pb_utils.get_input_tensor_by_name(requests[0], "X")
                request = pb_utils.InferenceRequest(
                    model_name="doubler", requested_output_names=["DOUBLED"], inputs=[x])
                results = {}

                def plain():
                    try:
                        request.exec()
                    except pb_utils.TritonModelException as exc:
                        results["plain"] = str(exc)

                def with_context():
                    results["copied"] = request.exec().has_error()

                threading.Thread(target=plain).start()
                context = contextvars.copy_context()
                worker = threading.Thread(target=context.run, args=(with_context,))
                worker.start()
                worker.join()
                self.results = results
                return [pb_utils.InferenceResponse([]) for _ in requests]
    """
    instance = instance_of(tmp_path, "caller", source, loop)
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

    source = """
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                count = pb_utils.Tensor("COUNT", np.array([0], np.int32))
                responses = pb_utils.InferenceRequest(
                    model_name="endless", requested_output_names=["INDEX"], inputs=[count]
                ).exec(decoupled=True)
                got = [next(responses), next(responses)]
                responses.cancel()
                self.rest = list(responses)  # ends instead of hanging
                return [pb_utils.InferenceResponse([]) for _ in requests]
    """
    model_dir = write(tmp_path, "caller", source)
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
    source = """
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                pb_utils.load_model("other", config='{"backend": "python"}',
                                    files={"file:1/model.py": b"x"})
                pb_utils.unload_model(model_name="other", unload_dependents=True)
                self.ready = (pb_utils.is_model_ready("loaded"),
                              pb_utils.is_model_ready("other", "2"))
                try:
                    pb_utils.load_model("bad")
                except pb_utils.TritonModelException as exc:
                    self.error = str(exc)
                return [pb_utils.InferenceResponse([]) for _ in requests]
    """
    control = FakeControl()
    model_dir = write(tmp_path, "loader", source)
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
    source = """
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                pb_utils.is_model_ready("x")
    """
    instance = instance_of(tmp_path, "caller", source, loop)
    with pytest.raises(Exception, match=r"model loading API .* is not available"):
        run_sync(instance, {"X": np.zeros(1, np.float32)})
