"""The HTTP fast path for /infer (runtime/frontends/http/fast_infer.py), driven with raw sockets:
keep-alive and pipelining, the handover of a connection to aiohttp at the first other request,
the limits, and answers identical to aiohttp's."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.helpers import IDENTITY_MODEL_PY, identity_config, running_server, write_model

INFER_BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("fast_path_repo")
    write_model(
        repository,
        "ident",
        IDENTITY_MODEL_PY,
        identity_config("ident", dims="[ 4 ]", max_batch_size=8),
    )
    with running_server(repository, allow_grpc=False, http_max_input_size=4096) as running:
        yield running


def _connect(server) -> socket.socket:
    host, port = server.http_url.split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _infer_request(path: str = "/v2/models/ident/infer", body: bytes = INFER_BODY, extra=b""):
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read `count` HTTP/1.1 responses with Content-Length bodies."""
    buffer = b""
    responses = []
    deadline = time.monotonic() + 10
    while len(responses) < count and time.monotonic() < deadline:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end].decode("latin-1").split("\r\n")
            status = int(head[0].split()[1])
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(buffer) >= head_end + 4 + length:
                body = buffer[head_end + 4 : head_end + 4 + length]
                buffer = buffer[head_end + 4 + length :]
                responses.append((status, headers, body))
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return responses


def _outputs(body: bytes) -> list[float]:
    return json.loads(body)["outputs"][0]["data"]


def test_keep_alive_infers_on_one_connection(server):
    with _connect(server) as sock:
        for _ in range(3):
            sock.sendall(_infer_request())
            [(status, headers, body)] = _read_responses(sock, 1)
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert "server" not in headers  # answered by the fast path, not aiohttp
            assert _outputs(body) == [1, 2, 3, 4]


def test_pipelined_requests_are_answered_in_order(server):
    bodies = [
        json.dumps(
            {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [i] * 4}]}
        ).encode()
        for i in range(5)
    ]
    with _connect(server) as sock:
        sock.sendall(b"".join(_infer_request(body=body) for body in bodies))
        responses = _read_responses(sock, 5)
    assert [_outputs(body) for _, _, body in responses] == [[i] * 4 for i in range(5)]


def test_another_route_after_infers_hands_the_connection_to_aiohttp(server):
    with _connect(server) as sock:
        sock.sendall(
            _infer_request()
            + b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
            + _infer_request()
        )
        responses = _read_responses(sock, 3)
    assert [status for status, _, _ in responses] == [200, 200, 200]
    assert "server" not in responses[0][1]  # the fast path
    assert responses[1][2] == b"" and "aiohttp" in responses[1][1]["server"]
    assert "aiohttp" in responses[2][1]["server"]  # the connection stays with aiohttp
    assert _outputs(responses[2][2]) == [1, 2, 3, 4]


def test_errors_are_the_same_as_aiohttps(server):
    # Unknown model, bad JSON: answered on the fast path with the usual error bodies.
    with _connect(server) as sock:
        sock.sendall(_infer_request("/v2/models/nosuch/infer") + _infer_request(body=b"{nope"))
        (status_a, _, body_a), (status_b, _, body_b) = _read_responses(sock, 2)
    assert status_a == 404 and "nosuch" in json.loads(body_a)["error"]
    assert status_b == 400 and "error" in json.loads(body_b)


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        )
        [(status, _, body)] = _read_responses(sock, 1)
    assert status in (400, 413)
    assert b"4096" in body or status == 413


def test_an_oversized_head_goes_to_aiohttp_which_refuses_it(server):
    with _connect(server) as sock:
        sock.sendall(b"POST /v2/models/ident/infer HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n")
        responses = _read_responses(sock, 1)
    assert responses and responses[0][0] in (400, 431)


def test_garbage_gets_a_400_and_the_server_keeps_serving(server):
    with _connect(server) as sock:
        sock.sendall(b"\x00\x01 not http at all\r\n\r\n")
        responses = _read_responses(sock, 1)
    assert responses and responses[0][0] == 400
    client = httpclient.InferenceServerClient(server.http_url)
    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    inputs = [httpclient.InferInput("INPUT0", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(data)
    result = client.infer("ident", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    client.close()


def test_connection_close_is_honoured(server):
    with _connect(server) as sock:
        sock.sendall(_infer_request(extra=b"Connection: close\r\n"))
        [(status, headers, _)] = _read_responses(sock, 1)
        assert status == 200 and headers.get("connection") == "close"
        assert sock.recv(1) == b""  # the server closed its side


def test_binary_and_compressed_answers_match_tritonclient(server):
    # tritonclient sends binary tensors (Inference-Header-Content-Length) and, with
    # request_compression_algorithm, a gzip body: the first takes the fast path, the second
    # goes to aiohttp; both answer the same.
    client = httpclient.InferenceServerClient(server.http_url)
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    inputs = [httpclient.InferInput("INPUT0", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(data, binary_data=True)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]
    for compression in (None, "gzip"):
        result = client.infer(
            "ident",
            inputs,
            outputs=outputs,
            request_compression_algorithm=compression,
            response_compression_algorithm="gzip",
        )
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    client.close()
