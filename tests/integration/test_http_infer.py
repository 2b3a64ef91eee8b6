"""/infer over HTTP, driven by tritonclient.http (sync and aio) and by raw requests for the wire
details: JSON and binary tensors, raw bodies, parameters, classification, shared memory,
decoupled models over server-sent events, bad input, and cancellation on disconnect."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.helpers import IDENTITY_MODEL_PY, copy_models, running_server, write_model

from .grpc_support import IDENT_CONFIG, copy_marked_models
from .http_support import request, sse_events

STRINGS_CONFIG = """
name: "strings"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("http_infer_repo")
    model_dir = write_model(repository, "ident", IDENTITY_MODEL_PY, IDENT_CONFIG)
    (model_dir / "labels.txt").write_text("a\nb\nc\nd\n")
    write_model(repository, "strings", IDENTITY_MODEL_PY, STRINGS_CONFIG)
    copy_models(repository, "echo", "repeat")
    markers = tmp_path_factory.mktemp("markers")
    copy_marked_models(repository, markers, "slow", "ticker")
    with running_server(repository, allow_grpc=False) as running:
        running.markers = markers  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def client(server):
    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()


def ident_input(data: np.ndarray, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


# ------------------------------------------------------------------------------ happy paths


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_sync_client_json_and_binary(client, binary_in, binary_out):
    data = np.arange(8, dtype=np.float32).reshape(2, 4) / 3
    result = client.infer(
        "ident",
        [ident_input(data, binary_in)],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out)],
        request_id="r1",
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    response = result.get_response()
    assert response["id"] == "r1" and response["model_version"] == "1"


def test_aio_client_with_compressed_request_and_response(server):
    async def run():
        async with aiohttpclient.InferenceServerClient(server.http_url) as client:
            data = np.arange(4, dtype=np.float32).reshape(1, 4)
            for request_algorithm, response_algorithm in (("gzip", "deflate"), (None, "gzip")):
                result = await client.infer(
                    "ident",
                    [ident_input(data, True)],
                    request_compression_algorithm=request_algorithm,
                    response_compression_algorithm=response_algorithm,
                )
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
            assert await client.is_model_ready("ident")

    asyncio.run(run())


def test_json_response_shape_matches_triton(server):
    status, headers, body = request(
        server.http_url,
        "POST",
        "/v2/models/ident/infer",
        {
            "id": "42",
            "parameters": {"my_custom": 7},
            "inputs": [
                {"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}
            ],
            "outputs": [{"name": "OUTPUT0"}],
        },
    )
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "id": "42",
        "model_name": "ident",
        "model_version": "1",
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}
        ],
    }


def test_binary_data_output_and_raw_bodies_answer_in_binary(server):
    data = np.array([[1, 2, 3, 4]], dtype=np.float32)
    header = json.dumps(
        {
            "parameters": {"binary_data_output": True},
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ],
        }
    ).encode()
    for body, header_length in ((header + data.tobytes(), len(header)), (data.tobytes(), 0)):
        status, headers, answer = request(
            server.http_url,
            "POST",
            "/v2/models/ident/infer",
            body,
            {"Inference-Header-Content-Length": str(header_length)},
        )
        assert status == 200, answer
        assert headers["Content-Type"] == "application/octet-stream"
        json_length = int(headers["Inference-Header-Content-Length"])
        document = json.loads(answer[:json_length])
        assert document["outputs"][0]["parameters"] == {"binary_data_size": 16}
        assert answer[json_length:] == data.tobytes()


def test_bytes_tensors_round_trip(client):
    values = np.array([b"hello", "h\u00e9llo".encode(), b"\x00\xff"], dtype=np.object_)
    tensor = httpclient.InferInput("INPUT0", [3], "BYTES")
    tensor.set_data_from_numpy(values, binary_data=True)
    result = client.infer("strings", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0")])
    assert result.as_numpy("OUTPUT0").tolist() == values.tolist()


def test_parameters_reach_the_model_and_reserved_ones_do_not(client):
    tensor = httpclient.InferInput("INPUT0", [1], "FP32")
    tensor.set_data_from_numpy(np.zeros(1, np.float32))
    result = client.infer(
        "echo",
        [tensor],
        request_id="abc",
        priority=1,
        timeout=10_000_000,
        parameters={"temperature": 0.25, "mode": "fast", "n": 3, "flag": True},
    )
    params = json.loads(result.as_numpy("PARAMS")[0])
    assert params == {"temperature": 0.25, "mode": "fast", "n": 3, "flag": True}
    assert result.as_numpy("ID")[0] == b"abc"


def test_classification(client):
    data = np.array([[0.5, 3.0, 1.0, 2.0]], dtype=np.float32)
    result = client.infer(
        "ident",
        [ident_input(data, True)],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False, class_count=2)],
    )
    output = result.get_output("OUTPUT0")
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 2]
    assert output["data"] == ["3.000000:1:b", "2.000000:3:d"]


def test_system_shared_memory_inputs_and_outputs(client):
    data = np.arange(4, dtype=np.float32).reshape(1, 4) + 0.5
    key_in, key_out = f"/trident_http_in_{id(client)}", f"/trident_http_out_{id(client)}"
    handle_in = shm.create_shared_memory_region("http_in", key_in, 16)
    handle_out = shm.create_shared_memory_region("http_out", key_out, 32)
    try:
        shm.set_shared_memory_region(handle_in, [data])
        client.register_system_shared_memory("http_in", key_in, 16)
        client.register_system_shared_memory("http_out", key_out, 16, offset=16)
        status = {region["name"]: region for region in client.get_system_shared_memory_status()}
        assert status["http_out"] == {
            "name": "http_out",
            "key": key_out,
            "offset": 16,
            "byte_size": 16,
        }
        tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_shared_memory("http_in", 16)
        output = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
        output.set_shared_memory("http_out", 16)
        result = client.infer("ident", [tensor], outputs=[output])
        assert result.get_output("OUTPUT0") == {
            "name": "OUTPUT0",
            "datatype": "FP32",
            "shape": [1, 4],
        }
        written = shm.get_contents_as_numpy(handle_out, np.float32, [8])
        np.testing.assert_array_equal(written[4:], data[0])
        client.unregister_system_shared_memory("http_in")
        assert [r["name"] for r in client.get_system_shared_memory_status()] == ["http_out"]
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(handle_in)
        shm.destroy_shared_memory_region(handle_out)


# ------------------------------------------------------------------------------ decoupled


def test_decoupled_models_stream_over_sse_and_refuse_plain_infer(server):
    document = {"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [3]}]}
    status, _, body = request(server.http_url, "POST", "/v2/models/repeat/infer", document)
    assert status == 501 and "decoupled" in json.loads(body)["error"]

    status, headers, body = request(
        server.http_url,
        "POST",
        "/v2/models/repeat/infer",
        {**document, "id": "s1"},
        {"Accept": "text/event-stream"},
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(body)
    assert [event["outputs"][0]["data"] for event in events] == [[0], [1], [2]]
    assert all(event["id"] == "s1" and event["model_name"] == "repeat" for event in events)

    # Any model can answer as a stream of one event.
    status, _, body = request(
        server.http_url,
        "POST",
        "/v2/models/ident/infer",
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        {"Accept": "text/event-stream"},
    )
    (event,) = sse_events(body)
    assert status == 200 and event["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]


# ------------------------------------------------------------------------------ bad input


def infer_raw(server, body: bytes | str | dict, headers=None, model="ident"):
    status, _, answer = request(server.http_url, "POST", f"/v2/models/{model}/infer", body, headers)
    return status, json.loads(answer)


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(server, client):
    single = {"name": "INPUT0", "shape": [1, 4], "datatype": "FP32"}
    cases = [
        (b'{"inputs": [', None, 400, "failed to parse the request JSON"),
        ({"inputs": [{**single, "data": [1, 2, 3]}]}, None, 400, "holds 4 elements"),
        ({"inputs": [{**single, "shape": [2**40], "data": [1]}]}, None, 400, "1099511627776"),
        ({"inputs": [{**single, "data": [1, 2, 3, 4]}]}, None, 404, "unknown model"),
    ]
    for body, headers, status, message in cases:
        model = "nosuch" if status == 404 else "ident"
        got_status, answer = infer_raw(server, body, headers, model)
        assert (got_status, set(answer)) == (status, {"error"}), answer
        assert message in answer["error"]

    def binary(size: int, tail: bytes, datatype="FP32", shape=(1, 4)):
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "INPUT0",
                        "shape": list(shape),
                        "datatype": datatype,
                        "parameters": {"binary_data_size": size},
                    }
                ]
            }
        ).encode()
        return header + tail, {"Inference-Header-Content-Length": str(len(header))}

    for (body, headers), message in (
        (binary(12, b"x" * 12), "unexpected total byte size 12"),
        (binary(16, b"x" * 8), "additional bytes"),
        (binary(16, b"x" * 20), "unexpected additional input data"),
        (binary(8, (100).to_bytes(4, "little") + b"abcd", "BYTES", [1]), "declares 100"),
        (binary(8, b"x" * 8, "BYTES", [2**40]), "needs at least"),
    ):
        status, answer = infer_raw(server, body, headers)
        assert status == 400 and message in answer["error"], answer

    status, answer = infer_raw(server, b"not gzip", {"Content-Encoding": "gzip"})
    assert status == 400 and "content-encoding" in answer["error"]
    status, answer = infer_raw(server, b"{}", {"Inference-Header-Content-Length": "99"})
    assert status == 400 and "inference header size" in answer["error"]

    # Still serving, on a fresh connection and the same client as before.
    data = np.ones((1, 4), dtype=np.float32)
    np.testing.assert_array_equal(
        client.infer("ident", [ident_input(data, True)]).as_numpy("OUTPUT0"), data
    )


def test_tritonclient_reports_server_errors(client):
    tensor = httpclient.InferInput("INPUT0", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="unexpected shape") as info:
        client.infer("ident", [tensor])
    assert info.value.status() == "400"


# ------------------------------------------------------------------------------ cancellation


def send_then_hang_up(server, path: str, headers: str, body: bytes, wait_for: bytes | Path) -> None:
    """Send a request on a raw socket, wait until `wait_for` arrives (bytes on the socket, or a
    file the model writes once it runs), then disconnect."""
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
            + headers.encode()
            + b"\r\n"
            + body
        )
        if isinstance(wait_for, Path):
            assert wait_for_marker(wait_for), "the model never started"
            return
        received = b""
        deadline = time.monotonic() + 10
        while wait_for not in received and time.monotonic() < deadline:
            received += sock.recv(65536)
        assert wait_for in received


def wait_for_marker(marker: Path) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not marker.exists():
        time.sleep(0.05)
    return marker.exists()


@pytest.mark.parametrize(
    ("model", "headers", "wait_for"),
    [
        # The unary model is running when the client leaves (nothing has been sent back yet).
        ("slow", "", None),
        # The decoupled model is mid-stream: the first event has arrived.
        ("ticker", "Accept: text/event-stream\r\n", b"data: "),
    ],
)
def test_client_disconnect_cancels_the_request(server, model, headers, wait_for):
    marker = server.markers / model
    marker.unlink(missing_ok=True)
    if wait_for is None:
        wait_for = marker.with_suffix(".started")
        wait_for.unlink(missing_ok=True)
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [0]}]}
    ).encode()
    send_then_hang_up(server, f"/v2/models/{model}/infer", headers, body, wait_for)
    assert wait_for_marker(marker), "the model never saw the request cancelled"


def test_an_oversized_body_is_refused_before_it_is_read(server):
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1000000000\r\n\r\n{"
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400") and b"exceeds the maximum" in answer
