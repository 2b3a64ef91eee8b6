"""Restricted API groups (`--http-restricted-api`, `--grpc-restricted-protocol`) through the
real server: every group is restricted, a call of each is refused without its header exactly as
Triton refuses it (HTTP 403 {"error":"This API is restricted, expecting header 'KEY'"}, gRPC
UNAVAILABLE "This protocol is restricted, expecting header 'triton-grpc-protocol-KEY'"), and
served with it."""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers import (
    RunningServer,
    running_server,
)
from trident.runtime.protocol import health_pb2, health_pb2_grpc

from .grpc_support import GRPC_IMPLEMENTATIONS, expect_code
from .http_support import request

#: Every group restricted, with four different keys.
RESTRICTIONS = [
    "health,metadata:probe-key=p-123",
    "inference:infer-key=i-456",
    "shared-memory,model-repository,model-config:admin-key=a-789",
    "statistics,trace,logging:ops-key=o-000",
]
KEYS = {"probe-key": "p-123", "infer-key": "i-456", "admin-key": "a-789", "ops-key": "o-000"}
DATA = np.arange(16, dtype=np.float32)
INFER_BODY = {"inputs": [{"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": [1] * 16}]}


@pytest.fixture(scope="module", params=GRPC_IMPLEMENTATIONS)
def server(ident_repository: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """One server per gRPC implementation, shared by the module's tests."""
    with running_server(
        ident_repository,
        grpc_implementation=request.param,
        http_restricted_api=RESTRICTIONS,
        grpc_restricted_protocol=RESTRICTIONS,
        allow_metrics=False,
    ) as srv:
        yield srv


# --- HTTP ----------------------------------------------------------------------------------

#: (method, path, body, key of its group, status once the header is there).
HTTP_CALLS = [
    ("GET", "/v2/health/live", None, "probe-key", 200),
    ("GET", "/v2/models/ident/ready", None, "probe-key", 200),
    ("GET", "/v2", None, "probe-key", 200),
    ("GET", "/v2/models/ident", None, "probe-key", 200),
    ("POST", "/v2/models/ident/infer", INFER_BODY, "infer-key", 200),
    ("POST", "/v2/models/ident/generate", {"text_input": "x"}, "infer-key", None),
    ("POST", "/v1/completions", {"model": "ident", "prompt": "x"}, "infer-key", None),
    ("GET", "/v2/models/ident/config", None, "admin-key", 200),
    ("POST", "/v2/repository/index", {}, "admin-key", 200),
    ("GET", "/v1/models", None, "admin-key", 200),
    ("GET", "/v2/systemsharedmemory/status", None, "admin-key", 200),
    ("GET", "/v2/cudasharedmemory/status", None, "admin-key", 200),
    ("GET", "/v2/models/stats", None, "ops-key", 200),
    ("GET", "/v2/models/ident/stats", None, "ops-key", 200),
    ("GET", "/v2/trace/setting", None, "ops-key", 200),
    ("GET", "/v2/logging", None, "ops-key", 200),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "key", "allowed_status"),
    HTTP_CALLS,
    ids=[f"{m} {p}" for m, p, *_ in HTTP_CALLS],
)
def test_http_call_of_a_restricted_group_needs_its_header(
    server: RunningServer,
    method: str,
    path: str,
    body: Any,
    key: str,
    allowed_status: int | None,
) -> None:
    status, _, reply = request(server.http_url, method, path, body)
    assert status == 403
    assert reply == (
        b'{"error":"This API is restricted, expecting header \'' + key.encode() + b"'\"}"
    )
    wrong_key = next(other for other in KEYS if other != key)
    status, _, _ = request(server.http_url, method, path, body, {wrong_key: KEYS[wrong_key]})
    assert status == 403
    status, _, _ = request(server.http_url, method, path, body, {key: KEYS[key] + "x"})
    assert status == 403
    status, _, reply = request(server.http_url, method, path, body, {key: KEYS[key]})
    assert status != 403, reply
    if allowed_status is not None:
        assert status == allowed_status, reply


def test_http_header_names_match_in_any_case_and_restriction_comes_before_routing(
    server: RunningServer,
) -> None:
    status, _, reply = request(
        server.http_url, "POST", "/v2/models/ident/infer", INFER_BODY, {"Infer-KEY": "i-456"}
    )
    assert status == 200, reply
    assert json.loads(reply)["outputs"][0]["data"] == [1.0] * 16
    # As in Triton, a restricted route with the wrong method is refused before the 405.
    assert request(server.http_url, "GET", "/v2/models/ident/infer")[0] == 403
    # A path that is no route stays a 404.
    assert request(server.http_url, "GET", "/v2/nothing/here")[0] == 404


# --- gRPC ----------------------------------------------------------------------------------


def _header(key: str) -> dict[str, str]:
    return {f"triton-grpc-protocol-{key}": KEYS[key]}


def _infer(client: grpcclient.InferenceServerClient, headers: dict[str, str] | None) -> Any:
    tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
    tensor.set_data_from_numpy(DATA)
    result = client.infer("ident", [tensor], headers=headers)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), DATA)
    return result


#: (name, call taking (client, headers), key of its group).
GRPC_CALLS: list[tuple[str, Callable[[grpcclient.InferenceServerClient, Any], Any], str]] = [
    ("ServerLive", lambda c, h: c.is_server_live(headers=h), "probe-key"),
    ("ModelReady", lambda c, h: c.is_model_ready("ident", headers=h), "probe-key"),
    ("ServerMetadata", lambda c, h: c.get_server_metadata(headers=h), "probe-key"),
    ("ModelMetadata", lambda c, h: c.get_model_metadata("ident", headers=h), "probe-key"),
    ("ModelInfer", _infer, "infer-key"),
    ("ModelConfig", lambda c, h: c.get_model_config("ident", headers=h), "admin-key"),
    ("RepositoryIndex", lambda c, h: c.get_model_repository_index(headers=h), "admin-key"),
    (
        "SystemSharedMemoryStatus",
        lambda c, h: c.get_system_shared_memory_status(headers=h),
        "admin-key",
    ),
    ("ModelStatistics", lambda c, h: c.get_inference_statistics("ident", headers=h), "ops-key"),
    ("TraceSetting", lambda c, h: c.get_trace_settings(headers=h), "ops-key"),
    ("LogSettings", lambda c, h: c.get_log_settings(headers=h), "ops-key"),
]


@pytest.mark.parametrize(("name", "call", "key"), GRPC_CALLS, ids=[c[0] for c in GRPC_CALLS])
def test_grpc_call_of_a_restricted_group_needs_its_metadata_key(
    server: RunningServer,
    name: str,
    call: Callable[[grpcclient.InferenceServerClient, Any], Any],
    key: str,
) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        expect_code(
            grpc.StatusCode.UNAVAILABLE,
            lambda: call(client, None),
            f"This protocol is restricted, expecting header 'triton-grpc-protocol-{key}'",
        )
        # The plain key (without Triton's prefix) and a wrong value are refused too.
        expect_code(grpc.StatusCode.UNAVAILABLE, lambda: call(client, {key: KEYS[key]}))
        wrong = {f"triton-grpc-protocol-{key}": "nope"}
        expect_code(grpc.StatusCode.UNAVAILABLE, lambda: call(client, wrong))
        call(client, _header(key))
    finally:
        client.close()


def _stream_once(url: str, headers: dict[str, str] | None) -> tuple[Any, Any]:
    """Start a stream, send one request; the first (result, error) its callback got."""
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    try:
        client.start_stream(lambda result, error: results.put((result, error)), headers=headers)
        tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
        tensor.set_data_from_numpy(DATA)
        try:
            client.async_stream_infer("ident", [tensor])
        except InferenceServerException:
            pass  # the stream already ended: its error went to the callback
        outcome = results.get(timeout=20)
        client.stop_stream()
        return outcome
    finally:
        client.close()


def test_grpc_stream_needs_the_inference_key(server: RunningServer) -> None:
    result, error = _stream_once(server.grpc_url, None)
    assert isinstance(error, InferenceServerException)
    assert error.status() == "StatusCode.UNAVAILABLE"
    assert "expecting header 'triton-grpc-protocol-infer-key'" in str(error)
    result, error = _stream_once(server.grpc_url, _header("infer-key"))
    assert error is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), DATA)


def test_grpc_health_service_is_in_the_health_group(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        reply = stub.Check(
            health_pb2.HealthCheckRequest(), timeout=10, metadata=list(_header("probe-key").items())
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
