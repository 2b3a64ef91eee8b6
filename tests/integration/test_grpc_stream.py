"""ModelStreamInfer: decoupled models stream every response, `triton_final_response` and the
optional empty final response, errors that fail one request but not the stream, ordering for
non-decoupled models, `triton_grpc_error` mode and cancellation. Driven by tritonclient.grpc
(start_stream / async_stream_infer) and tritonclient.grpc.aio (stream_infer)."""

from __future__ import annotations

import asyncio
import queue
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient

from tests.helpers import running_server
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.protocol import grpc_service_pb2_grpc as gs_grpc

from .grpc_support import GRPC_IMPLEMENTATIONS, serving_test_models, wait_for, write_test_models


@pytest.fixture(scope="module", params=GRPC_IMPLEMENTATIONS)
def server(request, tmp_path_factory):
    with serving_test_models(tmp_path_factory, request.param) as running:
        yield running


class Collector:
    """A stream callback that queues (result, error) pairs."""

    def __init__(self) -> None:
        self.items: queue.Queue = queue.Queue()

    def __call__(self, result, error) -> None:
        self.items.put((result, error))

    def take(self, count: int, timeout: float = 20) -> list:
        return [self.items.get(timeout=timeout) for _ in range(count)]

    def nothing_more(self, wait: float = 0.3) -> bool:
        try:
            self.items.get(timeout=wait)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def stream(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    collector = Collector()
    client.start_stream(callback=collector)
    yield client, collector
    client.stop_stream()
    client.close()


def _count_input(count: int) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([count], dtype=np.int32))
    return [tensor]


def _final_flag(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def test_decoupled_model_streams_every_response(stream):
    client, collector = stream
    client.async_stream_infer("repeat", _count_input(3), request_id="three")
    items = collector.take(3)
    assert [error for _, error in items] == [None, None, None]
    assert [int(result.as_numpy("OUT")[0]) for result, _ in items] == [0, 1, 2]
    assert [result.get_response().id for result, _ in items] == ["three"] * 3
    assert [_final_flag(result) for result, _ in items] == [False, False, False]
    # The flag-only final response is not sent unless asked for.
    assert collector.nothing_more()


def test_empty_final_response_when_asked(stream):
    client, collector = stream
    client.async_stream_infer(
        "repeat", _count_input(2), request_id="two", enable_empty_final_response=True
    )
    items = collector.take(3)
    assert [error for _, error in items] == [None, None, None]
    assert [_final_flag(result) for result, _ in items] == [False, False, True]
    last = items[-1][0].get_response()
    assert (last.id, last.model_name, last.model_version) == ("two", "repeat", "1")
    assert len(last.outputs) == 0 and len(last.raw_output_contents) == 0
    assert collector.nothing_more()


def test_zero_responses_then_empty_final(stream):
    client, collector = stream
    client.async_stream_infer("repeat", _count_input(0), enable_empty_final_response=True)
    ((result, error),) = collector.take(1)
    assert error is None and _final_flag(result) is True
    assert collector.nothing_more()


def test_last_response_carries_the_final_flag(stream):
    client, collector = stream
    client.async_stream_infer("last_is_final", _count_input(0), enable_empty_final_response=True)
    items = collector.take(3)
    assert [int(result.as_numpy("OUT")[0]) for result, _ in items] == [0, 1, 2]
    assert [_final_flag(result) for result, _ in items] == [False, False, True]
    assert collector.nothing_more()


def test_non_decoupled_model_on_a_stream_keeps_request_order(stream):
    client, collector = stream
    for index in range(8):
        data = np.full((1, 4), index, dtype=np.float32)
        tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(data)
        client.async_stream_infer("ident", [tensor], request_id=str(index))
    items = collector.take(8)
    assert [error for _, error in items] == [None] * 8
    assert [result.get_response().id for result, _ in items] == [str(i) for i in range(8)]
    assert [float(result.as_numpy("OUTPUT0")[0, 0]) for result, _ in items] == list(range(8))
    assert all(_final_flag(result) for result, _ in items)


def test_errors_fail_one_request_and_the_stream_goes_on(stream):
    client, collector = stream
    client.async_stream_infer("nosuch", _count_input(1), request_id="bad-model")
    ((result, error),) = collector.take(1)
    assert result is None and "nosuch" in error.message()
    wrong = grpcclient.InferInput("IN", [1], "FP32")
    wrong.set_data_from_numpy(np.zeros(1, np.float32))
    client.async_stream_infer("repeat", [wrong], request_id="bad-type")
    ((result, error),) = collector.take(1)
    assert result is None and error is not None
    # A model that reports an error mid-stream: one good response, then the error.
    client.async_stream_infer("repeat", _count_input(-1), request_id="fails")
    (good, _), (result, error) = collector.take(2)
    assert int(good.as_numpy("OUT")[0]) == 0
    assert result is None and "asked to fail" in error.message()
    # The stream still works.
    client.async_stream_infer("repeat", _count_input(1), request_id="after")
    ((result, error),) = collector.take(1)
    assert error is None and int(result.as_numpy("OUT")[0]) == 0


def test_error_responses_carry_the_request_id(server):
    request = gs.ModelInferRequest(model_name="nosuch", id="lost-1")
    request.inputs.add(name="IN", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([1], np.int32).tobytes())
    with grpc.insecure_channel(server.grpc_url) as channel:
        replies = list(gs_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([request])))
    assert len(replies) == 1
    assert "nosuch" in replies[0].error_message
    assert replies[0].infer_response.id == "lost-1"


def test_triton_grpc_error_mode_closes_the_stream(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    collector = Collector()
    try:
        client.start_stream(callback=collector, headers={"triton_grpc_error": "true"})
        client.async_stream_infer("nosuch", _count_input(1))
        ((result, error),) = collector.take(1)
        assert result is None
        assert error.status() == str(grpc.StatusCode.NOT_FOUND)
    finally:
        client.stop_stream()
        client.close()


def test_many_concurrent_decoupled_requests_on_one_stream(stream):
    client, collector = stream
    for index in range(6):
        client.async_stream_infer("repeat", _count_input(4), request_id=f"req-{index}")
    items = collector.take(24)
    assert all(error is None for _, error in items)
    by_request: dict[str, list[int]] = {}
    for result, _ in items:
        by_request.setdefault(result.get_response().id, []).append(int(result.as_numpy("OUT")[0]))
    assert by_request == {f"req-{index}": [0, 1, 2, 3] for index in range(6)}


def test_aio_stream_infer(server):
    async def run():
        client = aiogrpcclient.InferenceServerClient(server.grpc_url)

        async def requests():
            for count in (2, 3):
                tensor = aiogrpcclient.InferInput("IN", [1], "INT32")
                tensor.set_data_from_numpy(np.array([count], dtype=np.int32))
                yield {
                    "model_name": "repeat",
                    "inputs": [tensor],
                    "request_id": f"aio-{count}",
                }

        seen: dict[str, list] = {}
        try:
            responses = client.stream_infer(requests())
            async for result, error in responses:
                assert error is None
                response = result.get_response()
                final = response.parameters["triton_final_response"].bool_param
                value = int(result.as_numpy("OUT")[0]) if response.outputs else None
                seen.setdefault(response.id, []).append((value, final))
        finally:
            await client.close()
        return seen

    # The client half-closes after its two requests; the server finishes both, then ends the
    # stream (which ends the loop above).
    seen = asyncio.run(asyncio.wait_for(run(), 30))
    assert seen == {
        "aio-2": [(0, False), (1, False)],
        "aio-3": [(0, False), (1, False), (2, False)],
    }


def test_cancelling_the_stream_cancels_its_requests(server):
    marker = server.markers / "ticker"
    marker.unlink(missing_ok=True)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    collector = Collector()
    try:
        client.start_stream(callback=collector)
        tensor = grpcclient.InferInput("INPUT0", [1], "FP32")
        tensor.set_data_from_numpy(np.zeros(1, np.float32))
        client.async_stream_infer("ticker", [tensor])
        collector.take(3)  # it is streaming
        client.stop_stream(cancel_requests=True)
        assert wait_for(marker.exists), "the model never saw its request cancelled"
    finally:
        client.close()


def test_large_tensors_on_a_stream(stream):
    client, collector = stream
    data = np.random.default_rng(1).random(300_000, dtype=np.float32)  # 1.2 MB: zero-copy path
    tensor = grpcclient.InferInput("INPUT0", [data.size], "FP32")
    tensor.set_data_from_numpy(data)
    client.async_stream_infer("any_fp32", [tensor], request_id="big")
    ((result, error),) = collector.take(1)
    assert error is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_server_stop_ends_idle_streams_without_waiting_out_the_grace_period(tmp_path):
    write_test_models(tmp_path / "repo", tmp_path / "markers")
    (tmp_path / "markers").mkdir()
    collector = Collector()
    with running_server(tmp_path / "repo", allow_http=False, exit_timeout_secs=30) as running:
        client = grpcclient.InferenceServerClient(running.grpc_url)
        client.start_stream(callback=collector)
        client.async_stream_infer("repeat", _count_input(1))
        collector.take(1)
        started = time.monotonic()
    stopped_in = time.monotonic() - started
    client.stop_stream()
    client.close()
    assert stopped_in < 10, f"stopping took {stopped_in:.1f} s with an idle stream open"
