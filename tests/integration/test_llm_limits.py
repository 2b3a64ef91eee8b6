"""An llm model under hostile or heavy use: clients that go away (HTTP disconnect, gRPC cancel)
abort their generation and free its KV blocks; a full waiting queue answers 429 / UNAVAILABLE
"overloaded"; bad requests are 400s before any work."""

from __future__ import annotations

import json
import queue
import re
import socket
import time

import numpy as np
import pytest

pytest.importorskip("transformers")
openai = pytest.importorskip("openai")

import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.helpers import running_server  # noqa: E402
from tests.llm_models import build_tiny_llama, llm_engine, metric_values, write_llm_model  # noqa: E402

from .http_support import post_json, request  # noqa: E402

MODEL = "tiny"
#: Long enough that a generation is still running when the test acts on it.
LONG = {"temperature": 0, "max_tokens": 3000, "ignore_eos": True}
MAX_INPUT_SIZE = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_limits")
    weights = build_tiny_llama(root / "weights", max_position_embeddings=4096)
    write_llm_model(
        root / "repo",
        MODEL,
        {
            "model": str(weights),
            "max_num_seqs": 1,  # one running request: the next ones wait
            "max_waiting": 1,  # and one waiting: the one after is refused
            "num_blocks": 256,
            "max_model_len": 4096,
        },
    )
    with running_server(root / "repo", http_max_input_size=MAX_INPUT_SIZE) as running:
        yield running


def _open_stream(url: str, path: str, body: dict) -> socket.socket:
    """Send a streaming request and return its socket once the first event arrived."""
    host, port = url.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    payload = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    received = b""
    while b"data: " not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return sock


def _wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _idle(server) -> bool:
    stats = llm_engine(server, MODEL).stats()
    return (stats.num_running, stats.num_waiting, stats.kv_blocks_used) == (0, 0, 0)


def _aborted(server) -> float:
    status, _, body = request(server.metrics_url, "GET", "/metrics")
    assert status == 200
    values = metric_values(body.decode())
    return values[
        f'vllm:request_success_total{{model="{MODEL}",version="1",finished_reason="abort"}}'
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            f"/v2/models/{MODEL}/generate_stream",
            {"text_input": "Hello", "stream": True, "sampling_parameters": json.dumps(LONG)},
        ),
        (
            "/v1/completions",
            {
                "model": MODEL,
                "prompt": "Hello",
                "stream": True,
                "temperature": 0,
                "max_tokens": 3000,
                "ignore_eos": True,
            },
        ),
    ],
)
def test_a_client_that_disconnects_mid_stream_aborts_its_generation(server, path, body) -> None:
    aborted = _aborted(server)
    sock = _open_stream(server.http_url, path, body)
    assert llm_engine(server, MODEL).stats().num_running == 1
    sock.close()
    _wait_until(lambda: _idle(server))
    assert _aborted(server) == aborted + 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            f"/v2/models/{MODEL}/generate",
            {"text_input": "Hello", "sampling_parameters": json.dumps(LONG)},
        ),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "temperature": 0,
                "max_tokens": 3000,
                "ignore_eos": True,
            },
        ),
    ],
)
def test_a_client_that_disconnects_before_a_whole_answer_aborts_it(server, path, body) -> None:
    aborted = _aborted(server)
    host, port = server.http_url.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    payload = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    _wait_until(lambda: llm_engine(server, MODEL).stats().num_running == 1)
    sock.close()
    _wait_until(lambda: _idle(server))
    assert _aborted(server) == aborted + 1


def test_a_grpc_cancel_aborts_the_generation(server) -> None:
    aborted = _aborted(server)
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Hello"], dtype=np.object_))
    stream = grpcclient.InferInput("stream", [1], "BOOL")
    stream.set_data_from_numpy(np.array([True]))
    params = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
    params.set_data_from_numpy(np.array([json.dumps(LONG).encode()], dtype=np.object_))
    try:
        client.async_stream_infer(MODEL, [text, stream, params])
        _, error = results.get(timeout=30)
        assert error is None, error
        client.stop_stream(cancel_requests=True)
    finally:
        client.close()
    _wait_until(lambda: _idle(server))
    assert _aborted(server) == aborted + 1


def test_a_full_waiting_queue_is_429_and_unavailable(server) -> None:
    body = {"text_input": "Hello", "stream": True, "sampling_parameters": json.dumps(LONG)}
    path = f"/v2/models/{MODEL}/generate_stream"
    running = _open_stream(server.http_url, path, body)
    waiting = None
    try:
        host, port = server.http_url.rsplit(":", 1)
        waiting = socket.create_connection((host, int(port)), timeout=30)
        payload = json.dumps(body).encode()
        waiting.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        _wait_until(lambda: llm_engine(server, MODEL).stats().num_waiting == 1)
        status, document = post_json(
            server.http_url, f"/v2/models/{MODEL}/generate", {"text_input": "Hi", "max_tokens": 2}
        )
        assert status == 429 and "overloaded" in document["error"]
        with (
            openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="x", max_retries=0) as c,
            pytest.raises(openai.RateLimitError, match="overloaded"),
        ):
            c.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            text = grpcclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([b"Hi"], dtype=np.object_))
            with pytest.raises(InferenceServerException, match="overloaded") as caught:
                client.infer(MODEL, [text])
            assert caught.value.status() == "StatusCode.UNAVAILABLE"
        finally:
            client.close()
    finally:
        running.close()
        if waiting is not None:
            waiting.close()
    _wait_until(lambda: _idle(server))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text_input": "word " * 5000}, "max_model_len|cannot fit"),
        ({"text_input": "Hi", "sampling_parameters": '{"max_tokens": -1}'}, "max_tokens"),
        ({"text_input": "Hi", "sampling_parameters": '{"best_of": 3}'}, "best_of"),
        ({"text_input": "Hi", "sampling_parameters": "{not json"}, "not valid JSON"),
        ({"text_input": "Hi", "no_such_parameter": 1}, "no_such_parameter"),
        ({"text_input": "Hi", "input_ids": [1, 2]}, "exactly one of"),
    ],
)
def test_bad_generate_requests_are_400s(server, body, message) -> None:
    status, document = post_json(server.http_url, f"/v2/models/{MODEL}/generate", body)
    assert status == 400, document
    assert re.search(message, document["error"]), document


def test_malformed_and_oversized_bodies_are_400s(server) -> None:
    status, _, body = request(
        server.http_url, "POST", f"/v2/models/{MODEL}/generate", b'{"text_input": "Hi"'
    )
    assert status == 400 and b"JSON" in body
    big = {"model": MODEL, "prompt": "x" * (MAX_INPUT_SIZE + 1)}
    status, document = post_json(server.http_url, "/v1/completions", big)
    assert status == 400 and "exceeds" in document["error"]["message"]
    assert _idle(server)
