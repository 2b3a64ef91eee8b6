"""CUDA shared memory through the real server, over HTTP and gRPC with tritonclient.

Everywhere: the server's registry runs on the fake CUDA runtime (tests/fake_cuda_runtime.py), so
the frontends, the data plane's routing and the registry are exercised on CPU; and a server
without a GPU answers register with 501/UNIMPLEMENTED while status and unregister work.
Where a GPU exists (marker `gpu`): tritonclient.utils.cuda_shared_memory allocates real device
memory in a client process, and an identity model reads and writes it.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.fake_cuda_runtime import FakeCudaRuntime
from tests.helpers import running_server
from trident.runtime.core.cuda_runtime import cuda_runtime_available
from trident.runtime.core.devices import gpu_ids
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.protocol import grpc_service_pb2_grpc as gs_grpc

from .grpc_support import expect_code
from .http_support import get_json, post_json

DATA = np.arange(16, dtype=np.float32) * 1.5
BYTE_SIZE = DATA.nbytes


@pytest.fixture(scope="module")
def server(ident_repository):
    with running_server(ident_repository) as running:
        yield running


@pytest.fixture
def fake(server):
    """Run the server's CUDA registry on the fake runtime, for one test."""
    registry = server.server.cuda_shared_memory
    real = registry._runtime  # the registry opens libcudart only when this is None
    fake = FakeCudaRuntime(devices=1)
    registry._runtime = fake
    yield fake
    registry.unregister()
    registry._runtime = real


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_register_infer_and_unregister_on_the_fake_runtime(server, fake, protocol):
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(
        server.http_url if protocol == "http" else server.grpc_url
    )
    try:
        client.unregister_cuda_shared_memory()  # what perf_analyzer does first
        input_handle = fake.allocate_b64(BYTE_SIZE)
        output_handle = fake.allocate_b64(2 * BYTE_SIZE)
        fake.memory(_raw(input_handle))[:] = np.frombuffer(DATA.tobytes(), np.uint8)
        client.register_cuda_shared_memory("in", input_handle, 0, BYTE_SIZE)
        client.register_cuda_shared_memory("out", output_handle, 0, 2 * BYTE_SIZE)
        assert _status(client) == [
            {"name": "in", "device_id": 0, "byte_size": BYTE_SIZE},
            {"name": "out", "device_id": 0, "byte_size": 2 * BYTE_SIZE},
        ]
        assert _status(client, "out") == [
            {"name": "out", "device_id": 0, "byte_size": 2 * BYTE_SIZE}
        ]

        tensor = module.InferInput("INPUT0", [16], "FP32")
        tensor.set_shared_memory("in", BYTE_SIZE)
        requested = module.InferRequestedOutput("OUTPUT0")
        requested.set_shared_memory("out", BYTE_SIZE, offset=BYTE_SIZE)
        result = client.infer("ident", [tensor], outputs=[requested])
        output = result.get_output("OUTPUT0")
        shape = output["shape"] if protocol == "http" else list(output.shape)
        assert shape == [16]  # the values are in the region only (no data, as Triton)
        written = fake.memory(_raw(output_handle))[BYTE_SIZE:].tobytes()
        assert np.frombuffer(written, np.float32).tolist() == DATA.tolist()

        client.unregister_cuda_shared_memory("in")
        assert [region["name"] for region in _status(client)] == ["out"]
        client.unregister_cuda_shared_memory()
        assert _status(client) == [] and fake.open_mappings() == 0
    finally:
        client.close()


def test_register_errors_over_http(server, fake):
    handle = fake.allocate_b64(BYTE_SIZE).decode()
    path = "/v2/cudasharedmemory/region/r/register"
    body = {"raw_handle": {"b64": handle}, "device_id": 0, "byte_size": BYTE_SIZE}
    status, document = post_json(server.http_url, "/v2/cudasharedmemory/register", body)
    assert status == 400 and "region name" in document["error"]
    for missing in ("raw_handle", "device_id", "byte_size"):
        partial = {key: value for key, value in body.items() if key != missing}
        status, document = post_json(server.http_url, path, partial)
        assert status == 400 and f"'{missing}'" in document["error"]
    status, document = post_json(server.http_url, path, {**body, "raw_handle": handle})
    assert status == 400 and "raw_handle" in document["error"]
    status, document = post_json(server.http_url, path, {**body, "raw_handle": {"b64": "%%"}})
    assert status == 400 and "base64" in document["error"]
    status, document = post_json(server.http_url, path, {**body, "device_id": -1})
    assert status == 400 and "device_id" in document["error"]
    status, document = post_json(server.http_url, path, {**body, "byte_size": BYTE_SIZE + 1})
    assert status == 400 and "exceeds" in document["error"]
    assert post_json(server.http_url, path, body) == (200, None)
    status, document = post_json(server.http_url, path, body)
    assert status == 400 and "already registered" in document["error"]
    status, document = get_json(server.http_url, "/v2/cudasharedmemory/region/zz/status")
    assert status == 404 and "Unable to find cuda shared memory region: 'zz'" in document["error"]


def test_reading_past_a_region_is_refused(server, fake):
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        client.register_cuda_shared_memory("small", fake.allocate_b64(BYTE_SIZE), 0, BYTE_SIZE)
        tensor = httpclient.InferInput("INPUT0", [16], "FP32")
        tensor.set_shared_memory("small", BYTE_SIZE, offset=8)
        with pytest.raises(InferenceServerException, match="runs past its end"):
            client.infer("ident", [tensor])
        assert fake.copies == 0
    finally:
        client.close()


def test_names_are_shared_with_system_shared_memory(server, fake):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.register_cuda_shared_memory("taken", fake.allocate_b64(BYTE_SIZE), 0, BYTE_SIZE)
        with pytest.raises(InferenceServerException, match="already registered as CUDA"):
            client.register_system_shared_memory("taken", "/whatever", BYTE_SIZE)
    finally:
        client.close()


@pytest.mark.skipif(bool(gpu_ids()), reason="checks a server without a GPU")
def test_without_a_gpu_register_is_unsupported(server):
    http = httpclient.InferenceServerClient(server.http_url)
    try:
        assert "cuda_shared_memory" not in http.get_server_metadata()["extensions"]
        status, document = post_json(
            server.http_url,
            "/v2/cudasharedmemory/region/g/register",
            {
                "raw_handle": {"b64": base64.b64encode(b"\0" * 64).decode()},
                "device_id": 0,
                "byte_size": 4,
            },
        )
        assert status == 501
        assert document["error"] == (
            "CUDA shared memory needs a GPU: no CUDA device is visible to this server"
        )
        assert http.get_cuda_shared_memory_status() == []
        http.unregister_cuda_shared_memory()
    finally:
        http.close()
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = gs_grpc.GRPCInferenceServiceStub(channel)
        request = gs.CudaSharedMemoryRegisterRequest(
            name="g", raw_handle=b"\0" * 64, device_id=0, byte_size=4
        )
        expect_code(grpc.StatusCode.UNIMPLEMENTED, lambda: stub.CudaSharedMemoryRegister(request))
        assert len(stub.CudaSharedMemoryStatus(gs.CudaSharedMemoryStatusRequest()).regions) == 0
        stub.CudaSharedMemoryUnregister(gs.CudaSharedMemoryUnregisterRequest(name=""))


# ------------------------------------------------------------------------------ a real GPU

# Runs in its own process: CUDA refuses to open an IPC handle in the process that made it.
_GPU_CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    import tritonclient.utils.cuda_shared_memory as cudashm

    http_url, grpc_url = sys.argv[1:3]
    data = np.arange(16, dtype=np.float32) * 1.5
    results = {}
    for protocol, module, url in (("http", httpclient, http_url), ("grpc", grpcclient, grpc_url)):
        client = module.InferenceServerClient(url)
        client.unregister_cuda_shared_memory()
        source = cudashm.create_shared_memory_region(protocol + "_in", 64, 0)
        target = cudashm.create_shared_memory_region(protocol + "_out", 128, 0)
        try:
            cudashm.set_shared_memory_region(source, [data + len(results)])
            client.register_cuda_shared_memory(
                protocol + "_in", cudashm.get_raw_handle(source), 0, 64
            )
            client.register_cuda_shared_memory(
                protocol + "_out", cudashm.get_raw_handle(target), 0, 128
            )
            if protocol == "http":
                status = client.get_cuda_shared_memory_status()
            else:
                regions = client.get_cuda_shared_memory_status().regions.values()
                status = [
                    {"name": r.name, "device_id": r.device_id, "byte_size": r.byte_size}
                    for r in regions
                ]
            tensor = module.InferInput("INPUT0", [16], "FP32")
            tensor.set_shared_memory(protocol + "_in", 64)
            requested = module.InferRequestedOutput("OUTPUT0")
            requested.set_shared_memory(protocol + "_out", 64, offset=64)
            client.infer("ident", [tensor], outputs=[requested])
            whole = cudashm.get_contents_as_numpy(target, np.float32, [32])
            results[protocol] = {
                "output": whole[16:].tolist(),
                "status": sorted(status, key=lambda r: r["name"]),
            }
            client.unregister_cuda_shared_memory()
            after = client.get_cuda_shared_memory_status()
            results[protocol]["after"] = len(after if protocol == "http" else after.regions)
        finally:
            cudashm.destroy_shared_memory_region(source)
            cudashm.destroy_shared_memory_region(target)
            client.close()
    print(json.dumps(results))
    """
)


def _gpu_skip_reason() -> str:
    if not gpu_ids():
        return "needs a CUDA GPU (none is visible)"
    if importlib.util.find_spec("cuda") is None:
        return "needs cuda-python for tritonclient.utils.cuda_shared_memory"
    if not cuda_runtime_available():
        return "needs libcudart (pip install nvidia-cuda-runtime-cu12)"
    return ""


@pytest.mark.gpu
def test_cuda_shared_memory_on_a_real_gpu(server):
    reason = _gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    assert "cuda_shared_memory" in server.server.dataplane.queries.server_metadata().extensions
    completed = subprocess.run(
        [sys.executable, "-c", _GPU_CLIENT, server.http_url, server.grpc_url],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    for index, protocol in enumerate(("http", "grpc")):
        expected = (np.arange(16, dtype=np.float32) * 1.5 + index).tolist()
        assert results[protocol]["output"] == expected, protocol
        assert results[protocol]["status"] == [
            {"name": f"{protocol}_in", "device_id": 0, "byte_size": 64},
            {"name": f"{protocol}_out", "device_id": 0, "byte_size": 128},
        ]
        assert results[protocol]["after"] == 0


# ------------------------------------------------------------------------------ helpers


def _raw(handle_b64: bytes) -> bytes:
    return base64.b64decode(handle_b64)


def _status(client, name: str = "") -> list[dict]:
    if isinstance(client, httpclient.InferenceServerClient):
        return client.get_cuda_shared_memory_status(name)
    regions = client.get_cuda_shared_memory_status(name).regions
    return [
        {"name": region.name, "device_id": region.device_id, "byte_size": region.byte_size}
        for region in sorted(regions.values(), key=lambda region: region.name)
    ]
