"""`--allow-shared-memory=false`: system and CUDA shared-memory registration is refused on HTTP
(403) and gRPC (PERMISSION_DENIED) with a message naming the flag; status and unregister still
answer, so clients that clean up first (perf_analyzer) keep working."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.helpers import (
    RunningServer,
    running_server,
)

from .grpc_support import GRPC_IMPLEMENTATIONS, expect_code
from .http_support import post_json

REFUSED = "shared memory registration is refused: this server was started with "
FLAG = "--allow-shared-memory=false"


@pytest.fixture(scope="module", params=GRPC_IMPLEMENTATIONS)
def server(ident_repository: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with running_server(
        ident_repository,
        grpc_implementation=request.param,
        allow_shared_memory=False,
        allow_metrics=False,
    ) as srv:
        yield srv


@pytest.fixture
def region() -> Iterator[Any]:
    """A real POSIX shared-memory object the client could have registered."""
    handle = shm.create_shared_memory_region("refused_region", "/trident_refused_region", 64)
    try:
        yield handle
    finally:
        shm.destroy_shared_memory_region(handle)


def test_http_register_is_refused_and_status_and_unregister_answer(
    server: RunningServer, region: Any
) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.register_system_shared_memory("r", "/trident_refused_region", 64)
        assert caught.value.status() == "403"
        assert f"system {REFUSED}{FLAG}" in caught.value.message()
        with pytest.raises(InferenceServerException) as caught:
            client.register_cuda_shared_memory("c", base64.b64encode(b"\0" * 64), 0, 64)
        assert caught.value.status() == "403"
        assert f"CUDA {REFUSED}{FLAG}" in caught.value.message()
        assert client.get_system_shared_memory_status() == []
        assert client.get_cuda_shared_memory_status() == []
        client.unregister_system_shared_memory()
        client.unregister_system_shared_memory("r")
        client.unregister_cuda_shared_memory()
    finally:
        client.close()
    # The raw answer: Triton's error body shape.
    status, body = post_json(
        server.http_url,
        "/v2/systemsharedmemory/region/r/register",
        {"key": "/trident_refused_region", "offset": 0, "byte_size": 64},
    )
    assert status == 403
    assert body["error"].startswith("system shared memory registration is refused")


def test_grpc_register_is_refused_and_status_and_unregister_answer(
    server: RunningServer, region: Any
) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        expect_code(
            grpc.StatusCode.PERMISSION_DENIED,
            lambda: client.register_system_shared_memory("r", "/trident_refused_region", 64),
            f"system {REFUSED}{FLAG}",
        )
        expect_code(
            grpc.StatusCode.PERMISSION_DENIED,
            lambda: client.register_cuda_shared_memory("c", b"\0" * 64, 0, 64),
            f"CUDA {REFUSED}{FLAG}",
        )
        assert len(client.get_system_shared_memory_status().regions) == 0
        assert len(client.get_cuda_shared_memory_status().regions) == 0
        client.unregister_system_shared_memory()
        client.unregister_cuda_shared_memory()
    finally:
        client.close()
