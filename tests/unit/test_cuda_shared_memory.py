"""CUDA shared memory on a fake CUDA runtime (tests/fake_cuda_runtime.py): registration, reads,
writes, bounds, unregistering, and the data plane's routing between system and CUDA regions.
The loader of the real runtime is tested with fake libraries; a real GPU is in
tests/integration/test_cuda_shared_memory.py."""

from __future__ import annotations

import ctypes
import types
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.fake_cuda_runtime import FakeCudaRuntime
from trident.runtime.core import cuda_runtime
from trident.runtime.core.cuda_shared_memory import CudaSharedMemoryRegistry, CudaShmRegionStatus
from trident.runtime.core.data_plane import DataPlane
from trident.runtime.core.devices import gpu_ids
from trident.runtime.core.outputs import finish_outputs
from trident.runtime.core.shared_memory import SharedMemoryRegistry
from trident.runtime.errors import (
    AlreadyExistsError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnsupportedError,
)
from trident.runtime.observability.trace_settings import TraceSettings
from trident.runtime.types import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    SharedMemoryRef,
    Tensor,
    serialize_bytes_tensor,
)


@pytest.fixture
def fake() -> FakeCudaRuntime:
    return FakeCudaRuntime(devices=2)


@pytest.fixture
def registry(fake: FakeCudaRuntime) -> CudaSharedMemoryRegistry:
    return CudaSharedMemoryRegistry(fake)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where the driver reports no GPU (whatever this one has)."""
    monkeypatch.setattr(cuda_runtime, "gpu_ids", lambda: ())
    monkeypatch.setattr(cuda_runtime, "_loaded", None)
    cuda_runtime.cuda_runtime_available.cache_clear()
    yield
    cuda_runtime.cuda_runtime_available.cache_clear()


# ------------------------------------------------------------------ registration and status


def test_register_status_unregister(registry, fake):
    first, second = fake.allocate(64, device_id=0), fake.allocate(32, device_id=1)
    registry.register("a", first, 0, 64)
    registry.register("b", second, 1, 16)  # a region may be smaller than its allocation
    assert registry.status() == [CudaShmRegionStatus("a", 0, 64), CudaShmRegionStatus("b", 1, 16)]
    assert registry.status("b") == [CudaShmRegionStatus("b", 1, 16)]
    assert "a" in registry and "zz" not in registry
    with pytest.raises(NotFoundError, match="Unable to find cuda shared memory region: 'zz'"):
        registry.status("zz")
    assert fake.open_mappings() == 2

    registry.unregister("a")
    registry.unregister("a")  # unknown names are not an error, as in Triton
    assert [s.name for s in registry.status()] == ["b"]
    assert fake.open_mappings() == 1
    registry.unregister()
    assert registry.status() == [] and fake.open_mappings() == 0


def test_register_rejects_bad_arguments(registry, fake):
    handle = fake.allocate(64)
    with pytest.raises(InvalidArgumentError, match="needs a name"):
        registry.register("", handle, 0, 64)
    with pytest.raises(InvalidArgumentError, match="64-byte cudaIpcMemHandle_t, got 10 bytes"):
        registry.register("r", b"x" * 10, 0, 64)
    with pytest.raises(InvalidArgumentError, match="must not be negative"):
        registry.register("r", handle, -1, 64)
    with pytest.raises(InvalidArgumentError, match="byte_size must be positive"):
        registry.register("r", handle, 0, 0)
    with pytest.raises(InvalidArgumentError, match="device_id 2 is not a GPU this server sees"):
        registry.register("r", handle, 2, 64)
    with pytest.raises(InvalidArgumentError, match="could not be opened on device 1"):
        registry.register("r", handle, 1, 64)  # allocated on device 0
    with pytest.raises(InvalidArgumentError, match="could not be opened"):
        registry.register("r", b"\x00" * 64, 0, 64)
    assert registry.status() == [] and fake.open_mappings() == 0


def test_register_checks_the_allocation_size_and_closes_on_failure(registry, fake):
    handle = fake.allocate(64)
    with pytest.raises(InvalidArgumentError, match="byte_size 65 exceeds the 64-byte allocation"):
        registry.register("big", handle, 0, 65)
    assert fake.open_mappings() == 0  # the handle opened for the check was closed again
    registry.register("big", handle, 0, 64)
    assert fake.open_mappings() == 1


def test_duplicate_names_are_refused_and_one_handle_is_mapped_once(registry, fake):
    handle = fake.allocate(64)
    registry.register("in", handle, 0, 32)
    with pytest.raises(AlreadyExistsError, match="'in' is already registered"):
        registry.register("in", handle, 0, 32)
    # A second name over the same allocation (CUDA refuses to map a handle twice per process).
    registry.register("out", handle, 0, 64)
    assert fake.open_mappings() == 1
    registry.unregister("in")
    assert fake.open_mappings() == 1  # "out" still uses it
    output = Tensor("Y", "INT32", (2,), np.array([5, 6], np.int32))
    registry.write_output(output, SharedMemoryRef("out", 8, 0))
    registry.unregister("out")
    assert fake.open_mappings() == 0


# ------------------------------------------------------------------ reading and writing


def test_read_inputs_at_an_offset(registry, fake):
    handle = fake.allocate(64)
    fake.memory(handle)[16:32] = np.frombuffer(
        np.array([1.5, 2.5, 3.5, 4.5], np.float32).tobytes(), np.uint8
    )
    registry.register("r", handle, 0, 64)
    tensor = Tensor("X", "FP32", (2, 2), shared_memory=SharedMemoryRef("r", 16, 16))
    plain = Tensor("P", "FP32", (1,), np.array([9], np.float32))
    registry.read_inputs([tensor, plain])
    assert tensor.data.dtype == np.float32 and tensor.data.shape == (2, 2)
    assert tensor.data.tolist() == [[1.5, 2.5], [3.5, 4.5]]
    assert plain.data.tolist() == [9]
    fake.memory(handle)[16:20] = 0  # the model got its own copy
    assert tensor.data[0, 0] == 1.5


def test_read_bytes_input(registry, fake):
    handle = fake.allocate(64)
    payload = serialize_bytes_tensor(np.array([b"ab", b"", b"xyz"], dtype=np.object_))
    fake.memory(handle)[: len(payload)] = np.frombuffer(payload, np.uint8)
    registry.register("r", handle, 0, 64)
    tensor = Tensor("S", "BYTES", (3,), shared_memory=SharedMemoryRef("r", len(payload), 0))
    registry.read_inputs([tensor])
    assert tensor.data.tolist() == [b"ab", b"", b"xyz"]


def test_reads_are_checked_before_any_copy(registry, fake):
    handle = fake.allocate(64)
    registry.register("r", handle, 0, 32)
    outside = Tensor("X", "FP32", (4,), shared_memory=SharedMemoryRef("r", 16, 24))
    with pytest.raises(InvalidArgumentError, match="'r' is 32 bytes: offset 24 \\+ byte_size 16"):
        registry.read_inputs([outside])
    negative = Tensor("X", "FP32", (4,), shared_memory=SharedMemoryRef("r", 16, -4))
    with pytest.raises(InvalidArgumentError, match="runs past its end"):
        registry.read_inputs([negative])
    wrong_size = Tensor("X", "FP32", (4,), shared_memory=SharedMemoryRef("r", 12, 0))
    with pytest.raises(InvalidArgumentError, match="needs 16 bytes"):
        registry.read_inputs([wrong_size])
    unknown = Tensor("X", "FP32", (4,), shared_memory=SharedMemoryRef("nope", 16, 0))
    with pytest.raises(NotFoundError, match="'nope'"):
        registry.read_inputs([unknown])
    assert fake.copies == 0


def test_write_output_at_an_offset(registry, fake):
    handle = fake.allocate(64)
    registry.register("r", handle, 0, 64)
    tensor = Tensor("Y", "INT64", (2, 2), np.arange(4, dtype=np.int64).reshape(2, 2).T)
    registry.write_output(tensor, SharedMemoryRef("r", 40, 8))  # room to spare
    written = np.frombuffer(fake.memory(handle)[8:40].tobytes(), np.int64)
    assert written.tolist() == [0, 2, 1, 3]  # the transposed (non-contiguous) values, in order
    assert tensor.shared_memory == SharedMemoryRef("r", 32, 8)  # the size actually written


def test_write_bytes_output(registry, fake):
    handle = fake.allocate(64)
    registry.register("r", handle, 0, 64)
    tensor = Tensor("S", "BYTES", (2,), np.array([b"hi", b"there"], dtype=np.object_))
    registry.write_output(tensor, SharedMemoryRef("r", 64, 0))
    payload = serialize_bytes_tensor(tensor.data)
    assert fake.memory(handle)[: len(payload)].tobytes() == payload
    assert tensor.shared_memory.byte_size == len(payload)


def test_writes_are_checked_before_any_copy(registry, fake):
    handle = fake.allocate(64)
    registry.register("r", handle, 0, 32)
    tensor = Tensor("Y", "FP32", (4,), np.zeros(4, np.float32))
    with pytest.raises(InvalidArgumentError, match="needs 16 bytes but shared memory region 'r'"):
        registry.write_output(tensor, SharedMemoryRef("r", 8, 0))
    with pytest.raises(InvalidArgumentError, match="runs past its end"):
        registry.write_output(tensor, SharedMemoryRef("r", 16, 24))
    with pytest.raises(NotFoundError):
        registry.write_output(tensor, SharedMemoryRef("gone", 16, 0))
    assert fake.copies == 0 and tensor.shared_memory is None


def test_cuda_failures_during_copies_are_internal_errors(registry, fake):
    handle = fake.allocate(16)
    registry.register("r", handle, 0, 16)

    def broken(*args):
        raise cuda_runtime.CudaRuntimeError("cudaMemcpy", 700, "an illegal memory access")

    fake.copy_to_host = broken
    tensor = Tensor("X", "FP32", (4,), shared_memory=SharedMemoryRef("r", 16, 0))
    with pytest.raises(InternalError, match="region 'r': cudaMemcpy failed: an illegal memory"):
        registry.read_inputs([tensor])


# ------------------------------------------------------------------ without a GPU


def test_without_a_gpu_register_is_unsupported_and_the_rest_works(no_gpu):
    registry = CudaSharedMemoryRegistry()
    assert not registry.available()
    with pytest.raises(UnsupportedError, match="needs a GPU: no CUDA device is visible"):
        registry.register("r", b"\x00" * 64, 0, 64)
    assert registry.status() == []
    registry.unregister()
    registry.unregister("r")
    with pytest.raises(NotFoundError):
        registry.status("r")


# ------------------------------------------------------------------ finding libcudart


class _FakeFunction:
    """A C function: ctypes attributes may be set on it, calls go to `body`."""

    def __init__(self, body) -> None:
        self.body = body

    def __call__(self, *args):
        return self.body(*args)


def _fake_cudart(device_count_error: int = 0, devices: int = 1) -> types.SimpleNamespace:
    def get_device_count(pointer) -> int:
        if device_count_error:
            return device_count_error
        pointer._obj.value = devices
        return 0

    names = (
        "cudaSetDevice",
        "cudaIpcOpenMemHandle",
        "cudaIpcCloseMemHandle",
        "cudaMemcpy",
        "cudaStreamSynchronize",
    )
    library = types.SimpleNamespace(**{name: _FakeFunction(lambda *a: 0) for name in names})
    library.cudaGetDeviceCount = _FakeFunction(get_device_count)
    library.cudaGetErrorString = _FakeFunction(
        lambda code: b"CUDA driver version is insufficient for CUDA runtime version"
    )
    return library


def _fake_driver() -> types.SimpleNamespace:
    return types.SimpleNamespace(cuMemGetAddressRange_v2=_FakeFunction(lambda *a: 0))


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch):
    """Point the loader at fake libraries: `libraries` maps a name to what opening it gives."""
    libraries: dict[str, object] = {}
    monkeypatch.setattr(cuda_runtime, "gpu_ids", lambda: (0,))
    monkeypatch.setattr(cuda_runtime, "_loaded", None)
    monkeypatch.setattr(cuda_runtime, "_open_library", libraries.get)
    monkeypatch.setattr(cuda_runtime, "library_candidates", lambda: ["libcudart.so.12", "x.so"])
    return libraries


def test_loader_without_a_gpu(no_gpu):
    with pytest.raises(UnsupportedError, match="no CUDA device is visible"):
        cuda_runtime.load_cuda_runtime()


def test_loader_without_a_library(loader):
    loader["libcuda.so.1"] = _fake_driver()
    with pytest.raises(UnsupportedError, match="pip install nvidia-cuda-runtime-cu12"):
        cuda_runtime.load_cuda_runtime()


def test_loader_reports_a_runtime_the_driver_cannot_run(loader):
    loader["libcuda.so.1"] = _fake_driver()
    loader["libcudart.so.12"] = _fake_cudart(device_count_error=35)
    with pytest.raises(UnsupportedError, match=r"libcudart.so.12: cudaGetDeviceCount failed: CUDA"):
        cuda_runtime.load_cuda_runtime()


def test_loader_takes_the_first_working_library_once(loader):
    loader["libcuda.so.1"] = _fake_driver()
    loader["libcudart.so.12"] = _fake_cudart(device_count_error=35)
    loader["x.so"] = _fake_cudart(devices=3)
    runtime = cuda_runtime.load_cuda_runtime()
    assert runtime.path == "x.so" and runtime.device_count() == 3
    loader.clear()  # cached: nothing is opened again
    assert cuda_runtime.load_cuda_runtime() is runtime


def test_library_candidates_look_in_the_wheel_first(monkeypatch, tmp_path: Path):
    wheel = tmp_path / "nvidia" / "cuda_runtime" / "lib"
    wheel.mkdir(parents=True)
    (wheel / "libcudart.so.12").write_bytes(b"")
    monkeypatch.setattr(
        cuda_runtime,
        "_package_dirs",
        lambda name: [tmp_path / "nvidia"] if name == "nvidia" else [],
    )
    candidates = cuda_runtime.library_candidates()
    assert candidates[0] == str(wheel / "libcudart.so.12")
    assert candidates[1:] == ["libcudart.so.12", "libcudart.so.13", "libcudart.so"]


def test_the_binding_reports_cuda_errors_with_their_text():
    library = cuda_runtime.CudartLibrary(_fake_cudart(device_count_error=35), _fake_driver(), "x")
    with pytest.raises(cuda_runtime.CudaRuntimeError) as info:
        library.device_count()
    assert info.value.code == 35 and "insufficient" in str(info.value)
    assert library._cudart.cudaGetDeviceCount.argtypes == [ctypes.POINTER(ctypes.c_int)]


def test_the_binding_loads_a_real_libcudart_where_one_exists():
    if gpu_ids():
        pytest.skip("a GPU is visible: the GPU integration test drives the real runtime")
    opened = (cuda_runtime._open_library(name) for name in cuda_runtime.library_candidates())
    library = next((library for library in opened if library is not None), None)
    if library is None:
        pytest.skip("no libcudart on this machine")
    # Every function the binding declares exists, and an error comes back with CUDA's text.
    binding = cuda_runtime.CudartLibrary(library, _fake_driver(), "real")
    with pytest.raises(cuda_runtime.CudaRuntimeError) as info:
        binding.device_count()
    assert info.value.code != 0 and "cudaGetDeviceCount failed: " in str(info.value)
    assert "unknown error" not in str(info.value)


# ------------------------------------------------------------------ the data plane


@pytest.fixture
def system_region():
    key = f"trident-cuda-test-{uuid.uuid4().hex[:8]}"
    path = Path("/dev/shm") / key
    path.write_bytes(b"\0" * 64)
    yield "/" + key, path
    path.unlink()


@pytest.fixture
def host_memory() -> SharedMemoryRegistry:
    return SharedMemoryRegistry()


def _plane(host: SharedMemoryRegistry, cuda: CudaSharedMemoryRegistry) -> DataPlane:
    # Only the shared-memory parts of the data plane are used here: no models, no log settings.
    return DataPlane.build(None, host, cuda, TraceSettings(), None)  # type: ignore[arg-type]


@pytest.fixture
def plane(host_memory, registry) -> DataPlane:
    return _plane(host_memory, registry)


def test_data_plane_registers_status_and_unregisters(plane, fake):
    plane.admin.cuda_shm_register("g", fake.allocate(16, device_id=1), 1, 16)
    assert plane.admin.cuda_shm_status() == [CudaShmRegionStatus("g", 1, 16)]
    plane.admin.cuda_shm_unregister("")
    assert plane.admin.cuda_shm_status() == []


def test_names_are_unique_across_system_and_cuda(plane, host_memory, fake, system_region):
    key, _ = system_region
    plane.admin.system_shm_register("sys", key, 0, 64)
    with pytest.raises(AlreadyExistsError, match="'sys' is already registered as system"):
        plane.admin.cuda_shm_register("sys", fake.allocate(16), 0, 16)
    plane.admin.cuda_shm_register("gpu", fake.allocate(16), 0, 16)
    with pytest.raises(AlreadyExistsError, match="'gpu' is already registered as CUDA"):
        plane.admin.system_shm_register("gpu", key, 0, 64)
    plane.admin.system_shm_unregister("")
    plane.admin.cuda_shm_register("sys", fake.allocate(16), 0, 16)  # free again
    host_memory.unregister()


def test_inputs_and_outputs_go_to_the_region_of_their_kind(
    plane, host_memory, registry, fake, system_region
):
    key, path = system_region
    path.write_bytes(np.array([10, 20], np.int32).tobytes().ljust(64, b"\0"))
    plane.admin.system_shm_register("sys", key, 0, 64)
    handle = fake.allocate(64)
    fake.memory(handle)[:8] = np.frombuffer(np.array([1, 2], np.int32).tobytes(), np.uint8)
    plane.admin.cuda_shm_register("gpu", handle, 0, 64)

    request = InferenceRequest(
        "m",
        inputs=[
            Tensor("A", "INT32", (2,), shared_memory=SharedMemoryRef("gpu", 8, 0)),
            Tensor("B", "INT32", (2,), shared_memory=SharedMemoryRef("sys", 8, 0)),
            Tensor("C", "INT32", (1,), np.array([7], np.int32)),
        ],
        outputs=[
            RequestedOutput("X", shared_memory=SharedMemoryRef("gpu", 8, 32)),
            RequestedOutput("Y", shared_memory=SharedMemoryRef("sys", 8, 32)),
        ],
    )
    plane.inference._read_shared_memory_inputs(request)
    assert [t.data.tolist() for t in request.inputs] == [[1, 2], [10, 20], [7]]

    response = InferenceResponse(
        outputs=[
            Tensor("X", "INT32", (2,), np.array([3, 4], np.int32)),
            Tensor("Y", "INT32", (2,), np.array([30, 40], np.int32)),
        ]
    )
    model = types.SimpleNamespace(name="m", labels={}, max_batch_size=0)
    finish_outputs(model, request, response, host_memory, registry)
    assert np.frombuffer(fake.memory(handle)[32:40].tobytes(), np.int32).tolist() == [3, 4]
    assert np.frombuffer(path.read_bytes()[32:40], np.int32).tolist() == [30, 40]
    assert [t.shared_memory for t in response.outputs] == [
        SharedMemoryRef("gpu", 8, 32),
        SharedMemoryRef("sys", 8, 32),
    ]
    host_memory.unregister()


def test_an_unknown_region_is_reported_as_missing(plane):
    request = InferenceRequest(
        "m", inputs=[Tensor("A", "INT32", (2,), shared_memory=SharedMemoryRef("nope", 8, 0))]
    )
    with pytest.raises(NotFoundError, match="'nope'"):
        plane.inference._read_shared_memory_inputs(request)


def test_the_extension_is_advertised_only_where_cuda_works(plane, no_gpu):
    assert "cuda_shared_memory" in plane.queries.server_metadata().extensions
    extensions = plane.queries.server_metadata().extensions
    assert extensions.index("cuda_shared_memory") == extensions.index("system_shared_memory") + 1
    without = _plane(SharedMemoryRegistry(), CudaSharedMemoryRegistry())
    assert "cuda_shared_memory" not in without.queries.server_metadata().extensions
    with pytest.raises(UnsupportedError, match="needs a GPU"):
        without.admin.cuda_shm_register("g", b"\x00" * 64, 0, 16)
    without.admin.cuda_shm_unregister("")
    assert without.admin.cuda_shm_status() == []
