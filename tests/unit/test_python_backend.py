"""The Python backend's execute path: models of tests/models copied to tmp_path, run through the
backend directly with runtime requests whose responders live on a real event loop."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from tests.helpers import copy_model
from trident.backends.base import ComputeTiming
from trident.backends.python.backend import PythonBackend, create_backend
from trident.runtime.errors import (
    InvalidArgumentError,
    ModelExecutionError,
    NotFoundError,
)
from trident.runtime.types import CancellationToken

from .test_python_backend_support import (
    LoopThread,
    loop_thread,
    make_context,
    make_request,
    output,
    write_model,
)


@pytest.fixture
def loop():
    yield from loop_thread()


def instance_of(model_dir, **context):
    return PythonBackend().create_instance(make_context(model_dir, **context))


def test_create_backend_names_the_python_backend():
    backend = create_backend()
    assert backend.name == "python"
    assert backend.default_model_filename == "model.py"


def test_identity_returns_the_input_array_without_copies(tmp_path):
    instance = instance_of(copy_model(tmp_path, "py_identity_in_out"))
    data = np.arange(6, dtype=np.int32).reshape(2, 3)
    responses = instance.execute([make_request("identity", {"IN": data})], ComputeTiming())
    assert instance.is_async is False and instance.decoupled is False
    (response,) = responses
    (tensor,) = response.outputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("OUT", "INT32", (2, 3))
    assert tensor.data is data


def test_add_sub_two_inputs_two_outputs_and_timing_marks(tmp_path):
    instance = instance_of(copy_model(tmp_path, "add_sub"))
    a = np.array([1, 2, 3, 4], np.float32)
    b = np.array([4, 3, 2, 1], np.float32)
    timing = ComputeTiming()
    before = time.monotonic_ns()
    responses = instance.execute(
        [
            make_request("add_sub", {"INPUT0": a, "INPUT1": b}),
            make_request("add_sub", {"INPUT0": b, "INPUT1": b}),
        ],
        timing,
    )
    assert len(responses) == 2
    np.testing.assert_array_equal(output(responses[0], "OUTPUT0"), a + b)
    np.testing.assert_array_equal(output(responses[0], "OUTPUT1"), a - b)
    np.testing.assert_array_equal(output(responses[1], "OUTPUT1"), np.zeros(4, np.float32))
    assert responses[0].outputs[0].datatype == "FP32"
    assert before <= timing.input_end_ns <= timing.output_start_ns <= time.monotonic_ns()


def test_bytes_tensors_in_and_out(tmp_path):
    instance = instance_of(copy_model(tmp_path, "py_bytes_flip"))
    text = np.array([b"abc", b"de"], dtype=np.object_)
    (response,) = instance.execute([make_request("bytes", {"TEXT": text})], ComputeTiming())
    flipped = response.outputs[0]
    assert flipped.datatype == "BYTES"
    assert list(flipped.data) == [b"cba", b"ed"]
    as_str = response.outputs[1]
    assert as_str.datatype == "BYTES"
    assert list(as_str.data) == ["héllo".encode(), "wörld".encode()]


def test_error_responses_fail_only_their_request_with_the_code_they_name(tmp_path):
    instance = instance_of(copy_model(tmp_path, "py_error_responses"))
    x = np.zeros(1, np.float32)
    responses = instance.execute(
        [make_request("errors", {"IN": x}) for _ in range(4)], ComputeTiming()
    )
    invalid, plain, ok, missing = responses
    assert isinstance(invalid.error, InvalidArgumentError)
    assert invalid.error.message == "bad input value"
    assert invalid.error.http_status == 400 and invalid.error.grpc_code == "INVALID_ARGUMENT"
    assert invalid.error.failure_reason == "BACKEND"
    assert isinstance(plain.error, ModelExecutionError)
    assert plain.error.http_status == 500 and plain.error.grpc_code == "INTERNAL"
    assert ok.error is None and output(ok, "OUT").shape == (1,)
    assert isinstance(missing.error, NotFoundError)


def test_an_exception_in_execute_fails_the_batch_with_its_message_and_line(tmp_path):
    instance = instance_of(copy_model(tmp_path, "py_execute_raises", "boom"))
    with pytest.raises(ModelExecutionError) as caught:
        instance.execute([make_request("boom", {"IN": np.zeros(1)})], ComputeTiming())
    assert caught.value.message == (
        "Failed to process the request(s) for model 'boom_0_0', message: "
        "ValueError: the model exploded (model.py, line 4)"
    )


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("[]", "InferenceRequest(s) size is:1, and InferenceResponse(s) size is:0"),
        ("{}", "Expected a list in the execute return, found type 'dict'"),
        ("['x']", "Expected an 'InferenceResponse' object in the execute function return list"),
    ],
)
def test_a_malformed_execute_result_is_a_clear_error(tmp_path, returned, expected):
    source = f"""
        class TritonPythonModel:
            def execute(self, requests):
                return {returned}
    """
    instance = instance_of(write_model(tmp_path, "bad", source))
    with pytest.raises(ModelExecutionError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        instance.execute([make_request("bad", {"IN": np.zeros(1)})], ComputeTiming())


def test_request_accessors(tmp_path):
    instance = instance_of(copy_model(tmp_path, "py_request_accessors"))
    cancelled = CancellationToken()
    cancelled.cancel()
    requests = [
        make_request(
            "accessors",
            {"IN": np.zeros(3, np.float32)},
            id="req-7",
            sequence_id=42,
            sequence_start=True,
            parameters={"my_custom": 7, "flag": True, "priority": 1, "sequence_id": 42},
            timeout_us=5000,
        ),
        make_request(
            "accessors",
            {"IN": np.zeros(2, np.float32)},
            outputs=("SEEN",),
            sequence_id="corr-a",
            sequence_end=True,
            cancellation=cancelled,
        ),
    ]
    first, second = (
        json.loads(output(r, "SEEN")[0]) for r in instance.execute(requests, ComputeTiming())
    )
    assert first == {
        "id": "req-7",
        "correlation_id": 42,
        "flags": 1,
        "parameters": {"my_custom": 7, "flag": True},
        "requested": ["SEEN", "OTHER"],  # none named: Triton fills in every output
        "inputs": ["IN"],
        "shape": [3],
        "cancelled": False,
        "timeout": 5000,
    }
    assert second["correlation_id"] == "corr-a"
    assert second["flags"] == 2
    assert second["requested"] == ["SEEN"]
    assert second["cancelled"] is True
    assert second["parameters"] == {}


def test_decoupled_model_streams_through_the_response_sender(tmp_path, loop: LoopThread):
    instance = instance_of(copy_model(tmp_path, "py_decoupled_counter"))
    assert instance.decoupled is True
    request = make_request("stream", {"N": np.array([3], np.int32)})
    request.responder = loop.stream_responder()
    assert instance.execute([request], ComputeTiming()) is None
    responses = loop.collect(request.responder)
    assert [int(output(r, "OUT")[0]) for r in responses[:3]] == [0, 1, 2]
    assert [r.final for r in responses] == [False, False, False, True]
    assert responses[3].outputs == [] and responses[3].error is None
    assert instance._model.late_send_error == (
        "Unable to send response. Response sender has been closed."
    )


def test_decoupled_model_may_send_from_its_own_thread_after_execute_returns(
    tmp_path, loop: LoopThread
):
    instance = instance_of(copy_model(tmp_path, "py_decoupled_thread_sender"))
    request = make_request("threaded", {"N": np.array([2], np.int32)})
    request.responder = loop.stream_responder()
    assert instance.execute([request], ComputeTiming()) is None
    responses = loop.collect(request.responder)
    assert [r.final for r in responses] == [False, False, True]


def test_decoupled_model_that_returns_responses_is_an_error(tmp_path, loop: LoopThread):
    instance = instance_of(copy_model(tmp_path, "py_decoupled_returns_list"))
    request = make_request("wrong", {"N": np.array([1], np.int32)})
    request.responder = loop.stream_responder()
    with pytest.raises(ModelExecutionError, match="execute function must return None"):
        instance.execute([request], ComputeTiming())


def test_non_decoupled_model_may_answer_through_the_response_sender(tmp_path, loop: LoopThread):
    instance = instance_of(copy_model(tmp_path, "py_sender_single_response"))
    request = make_request("single", {"N": np.array([1], np.int32)})
    request.responder = loop.single_responder()
    assert instance.execute([request], ComputeTiming()) is None
    response = loop.run(request.responder.result())
    assert response.final is True
    assert int(output(response, "OUT")[0]) == 7
    assert instance._model.errors == [
        "Unable to send response. Non-decoupled model cannot send complete final before "
        "sending a response.",
        "Unable to send response. Non-decoupled model cannot send more than one response.",
    ]


def test_non_decoupled_model_returning_none_without_sending_fails_the_request(
    tmp_path, loop: LoopThread
):
    instance = instance_of(copy_model(tmp_path, "py_returns_none"))
    request = make_request("silent", {"N": np.array([1], np.int32)})
    request.responder = loop.single_responder()
    assert instance.execute([request], ComputeTiming()) is None
    response = loop.run(request.responder.result())
    assert isinstance(response.error, ModelExecutionError)
    assert "returned None from execute" in response.error.message


def test_async_execute_runs_on_the_event_loop(tmp_path, loop: LoopThread):
    instance = instance_of(copy_model(tmp_path, "py_async_identity"), loop=loop.loop)
    assert instance.is_async is True
    data = np.array([1.5], np.float32)
    (response,) = loop.run(
        instance.execute([make_request("async_id", {"IN": data})], ComputeTiming())
    )
    assert output(response, "IN") is data
    assert instance._model.thread == loop.thread_id


def test_async_execute_exception_is_a_model_execution_error(tmp_path, loop: LoopThread):
    instance = instance_of(copy_model(tmp_path, "py_async_raises"), loop=loop.loop)
    with pytest.raises(ModelExecutionError, match="RuntimeError: async failure"):
        loop.run(
            instance.execute([make_request("async_boom", {"IN": np.zeros(1)})], ComputeTiming())
        )


def test_decoupled_async_execute_serves_requests_concurrently(tmp_path, loop: LoopThread):
    instance = instance_of(copy_model(tmp_path, "py_decoupled_async_concurrent"), loop=loop.loop)
    first = make_request("async_stream", {"N": np.array([1], np.int32)})
    second = make_request("async_stream", {"N": np.array([1], np.int32)})
    first.responder = loop.stream_responder()
    second.responder = loop.stream_responder()
    assert loop.run(instance.execute([first], ComputeTiming())) is None
    assert loop.run(instance.execute([second], ComputeTiming())) is None
    assert [int(output(r, "OUT")[0]) for r in loop.collect(first.responder)] == [1]
    assert [int(output(r, "OUT")[0]) for r in loop.collect(second.responder)] == [2]
    instance.close()


def test_decoupled_async_execute_failure_ends_the_open_streams(tmp_path, loop: LoopThread):
    instance = instance_of(copy_model(tmp_path, "py_decoupled_async_fail"), loop=loop.loop)
    request = make_request("async_fail", {"N": np.array([1], np.int32)})
    request.responder = loop.stream_responder()
    assert loop.run(instance.execute([request], ComputeTiming())) is None
    (response,) = loop.collect(request.responder)
    assert response.final is True
    assert isinstance(response.error, ModelExecutionError)
    assert "TritonModelException: cannot stream today" in response.error.message


def test_sync_execute_may_run_on_any_worker_thread_concurrently_with_others(tmp_path):
    # Two instances of one model: each keeps its own model object and module state.
    model_dir = copy_model(tmp_path, "py_module_counter")
    first, second = instance_of(model_dir), instance_of(model_dir)
    results = []

    def run(instance):
        request = make_request("counter", {"IN": np.zeros(1)})
        (response,) = instance.execute([request], ComputeTiming())
        results.append(int(output(response, "OUT")[0]))

    threads = [threading.Thread(target=run, args=(i,)) for i in (first, second, first)]
    for thread in threads:
        thread.start()
        thread.join()
    # Module-level state is per instance, as with Triton's process per instance.
    assert results == [1, 1, 2]
