"""What the gRPC transport itself must get right, on both gRPC servers: compression, unknown
methods, many calls on one connection, server-side deadlines, clients that are not gRPC, and
calls still running when the server stops. (The other gRPC test modules cover the RPCs.)"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient

from tests.helpers import copy_models, running_server
from trident.runtime.protocol import grpc_service_pb2 as gs

from .grpc_support import GRPC_IMPLEMENTATIONS, serving_test_models, write_test_models


@pytest.fixture(scope="module", params=GRPC_IMPLEMENTATIONS)
def server(request, tmp_path_factory):
    with serving_test_models(tmp_path_factory, request.param) as running:
        yield running


def _ident_inputs(values: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT0", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return [tensor]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_are_read(server, algorithm):
    data = np.linspace(0, 1, 4000, dtype=np.float32)
    tensor = grpcclient.InferInput("INPUT0", [data.size], "FP32")
    tensor.set_data_from_numpy(data)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        result = client.infer("any_fp32", [tensor], compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_unknown_method_is_unimplemented(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"", timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unparsable_request_message_is_an_error_and_the_server_goes_on(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\xff\xff\xff", timeout=10)
        assert raised.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        live = call(gs.ServerLiveRequest().SerializeToString(), timeout=10)
    assert gs.ServerLiveResponse.FromString(live).live


def test_many_concurrent_calls_on_one_connection_get_their_own_answers(server):
    async def run() -> None:
        async with aiogrpcclient.InferenceServerClient(server.grpc_url) as client:
            inputs = []
            for index in range(200):
                tensor = aiogrpcclient.InferInput("INPUT0", [1, 4], "FP32")
                tensor.set_data_from_numpy(np.full((1, 4), index, dtype=np.float32))
                inputs.append([tensor])
            results = await asyncio.gather(*(client.infer("ident", i) for i in inputs))
        for index, result in enumerate(results):
            assert result.as_numpy("OUTPUT0")[0, 0] == index

    asyncio.run(run())


def _raw_h2_call(url: str, headers: list[tuple[str, str]], body: bytes) -> dict[str, str]:
    """One call made by hand with the h2 library; returns the response headers and trailers."""
    host, port = url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        connection.initiate_connection()
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(stream_id, headers)
        connection.send_data(stream_id, body, end_stream=True)
        sock.sendall(connection.data_to_send())
        received: dict[str, str] = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return received
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    received.update(dict(event.headers))
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return received
            sock.sendall(connection.data_to_send())


def _grpc_headers(path: str, **extra: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra.items(),
    ]


def _framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def test_the_server_enforces_grpc_timeout_and_cancels_the_request(server):
    if server.server.settings.grpc_implementation != "native":
        pytest.skip("grpc.aio enforces deadlines its own way; checked for the native server")
    marker = server.markers / "slow"
    marker.unlink(missing_ok=True)
    request = gs.ModelInferRequest(model_name="slow")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
    request.raw_input_contents.append(np.zeros(1, dtype=np.float32).tobytes())
    started = time.monotonic()
    headers = _grpc_headers(
        "/inference.GRPCInferenceService/ModelInfer", **{"grpc-timeout": "300m"}
    )
    received = _raw_h2_call(server.grpc_url, headers, _framed(request.SerializeToString()))
    assert received["grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == "cancelled"


def test_a_request_that_is_not_grpc_gets_415(server):
    if server.server.settings.grpc_implementation != "native":
        pytest.skip("checked for the native server")
    headers = [
        h if h[0] != "content-type" else ("content-type", "text/plain")
        for h in _grpc_headers("/inference.GRPCInferenceService/ServerLive")
    ]
    received = _raw_h2_call(server.grpc_url, headers, b"")
    assert received[":status"] == "415"


def test_a_client_speaking_garbage_is_dropped_and_others_are_served(server):
    host, port = server.grpc_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 64)
        sock.settimeout(10)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.is_server_live()


def test_calls_in_flight_finish_when_the_server_stops(tmp_path):
    write_test_models(tmp_path / "repo", tmp_path / "markers")
    (tmp_path / "markers").mkdir()
    copy_models(tmp_path / "repo", "half_second")
    outcome: list[object] = []
    with running_server(tmp_path / "repo", allow_http=False, exit_timeout_secs=10) as running:
        client = grpcclient.InferenceServerClient(running.grpc_url)
        inputs = _ident_inputs(np.zeros(1, dtype=np.float32))

        def call() -> None:
            try:
                outcome.append(client.infer("half_second", inputs).as_numpy("OUTPUT0"))
            except Exception as exc:  # recorded for the assertion below
                outcome.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.2)  # the call is running when the server is asked to stop
    caller.join(10)
    client.close()
    assert len(outcome) == 1 and isinstance(outcome[0], np.ndarray), outcome
    np.testing.assert_array_equal(outcome[0], [1.0])
