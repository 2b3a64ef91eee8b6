"""A thin ctypes binding to the CUDA runtime (libcudart): just what CUDA shared memory needs.

Nothing here runs at import. `load_cuda_runtime()` finds and opens libcudart on first use (the
first CUDA shared-memory registration), so a server without a GPU never touches it. It looks, in
order, in the `nvidia-cuda-runtime-cu12` wheel (`nvidia/cuda_runtime/lib`, or `nvidia/cu13/lib`
for CUDA 13), in torch's `lib` folder, then asks the system loader.

`CudaRuntime` is the small interface the shared-memory registry uses; tests give the registry a
fake one backed by host memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from trident.runtime.errors import InternalError, UnsupportedError

from .devices import gpu_ids

#: sizeof(cudaIpcMemHandle_t): the bytes a client sends as `raw_handle`.
IPC_HANDLE_SIZE = 64

NO_GPU_MESSAGE = "CUDA shared memory needs a GPU: no CUDA device is visible to this server"
NO_LIBRARY_MESSAGE = (
    "CUDA shared memory needs the CUDA runtime library (libcudart.so.12), which this server "
    "cannot find: install it with 'pip install nvidia-cuda-runtime-cu12' (or a CUDA build of "
    "torch, or the CUDA toolkit)"
)

# Names the system loader may know, newest-compatible first.
_LOADER_NAMES = ("libcudart.so.12", "libcudart.so.13", "libcudart.so")

# cudaIpcMemLazyEnablePeerAccess: let another GPU of this process reach the memory too.
_IPC_LAZY_ENABLE_PEER_ACCESS = 1
_MEMCPY_HOST_TO_DEVICE = 1
_MEMCPY_DEVICE_TO_HOST = 2


class CudaRuntimeError(InternalError):
    """A CUDA call failed; `code` is its cudaError_t."""

    def __init__(self, call: str, code: int, message: str) -> None:
        super().__init__(f"{call} failed: {message} (CUDA error {code})")
        self.call = call
        self.code = code


class CudaRuntime(Protocol):
    """The CUDA operations CUDA shared memory uses. Device addresses are plain ints; host
    buffers are C-contiguous numpy arrays. Each call selects `device_id` first, because the
    current device is per thread."""

    def device_count(self) -> int: ...

    def open_ipc_handle(self, raw_handle: bytes, device_id: int) -> int:
        """Map another process's allocation; returns its device address here."""
        ...

    def close_ipc_handle(self, pointer: int, device_id: int) -> None: ...

    def allocation_size(self, pointer: int, device_id: int) -> int:
        """Bytes from `pointer` to the end of the allocation it belongs to."""
        ...

    def copy_to_host(self, host: np.ndarray, pointer: int, device_id: int) -> None:
        """Copy `host.nbytes` bytes from device address `pointer` into `host`."""
        ...

    def copy_to_device(self, pointer: int, host: np.ndarray, device_id: int) -> None:
        """Copy all of `host` to device address `pointer`; done when this returns."""
        ...


class _IpcMemHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * IPC_HANDLE_SIZE)]


class CudartLibrary:
    """`CudaRuntime` over an opened libcudart (and libcuda for the allocation size)."""

    def __init__(self, cudart: ctypes.CDLL, driver: ctypes.CDLL, path: str) -> None:
        self.path = path
        self._cudart = cudart
        self._driver = driver
        c_int, c_void_p, c_size_t = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
        cudart.cudaGetErrorString.restype = ctypes.c_char_p
        cudart.cudaGetErrorString.argtypes = [c_int]
        cudart.cudaGetDeviceCount.argtypes = [ctypes.POINTER(c_int)]
        cudart.cudaSetDevice.argtypes = [c_int]
        cudart.cudaIpcOpenMemHandle.argtypes = [
            ctypes.POINTER(c_void_p),
            _IpcMemHandle,
            ctypes.c_uint,
        ]
        cudart.cudaIpcCloseMemHandle.argtypes = [c_void_p]
        cudart.cudaMemcpy.argtypes = [c_void_p, c_void_p, c_size_t, c_int]
        cudart.cudaStreamSynchronize.argtypes = [c_void_p]
        # CUdeviceptr is an unsigned 64-bit integer; the _v2 entry point takes size_t sizes.
        driver.cuMemGetAddressRange_v2.argtypes = [
            ctypes.POINTER(ctypes.c_uint64),
            ctypes.POINTER(c_size_t),
            ctypes.c_uint64,
        ]
        for function in (
            cudart.cudaGetDeviceCount,
            cudart.cudaSetDevice,
            cudart.cudaIpcOpenMemHandle,
            cudart.cudaIpcCloseMemHandle,
            cudart.cudaMemcpy,
            cudart.cudaStreamSynchronize,
            driver.cuMemGetAddressRange_v2,
        ):
            function.restype = c_int

    def _check(self, call: str, code: int) -> None:
        if code != 0:
            message = self._cudart.cudaGetErrorString(code)
            raise CudaRuntimeError(call, code, message.decode() if message else "unknown error")

    def _set_device(self, device_id: int) -> None:
        self._check("cudaSetDevice", self._cudart.cudaSetDevice(device_id))

    def device_count(self) -> int:
        count = ctypes.c_int(0)
        self._check("cudaGetDeviceCount", self._cudart.cudaGetDeviceCount(ctypes.byref(count)))
        return count.value

    def open_ipc_handle(self, raw_handle: bytes, device_id: int) -> int:
        if len(raw_handle) != IPC_HANDLE_SIZE:
            raise ValueError(f"a CUDA IPC handle is {IPC_HANDLE_SIZE} bytes")
        self._set_device(device_id)
        handle = _IpcMemHandle()
        handle.reserved = raw_handle
        pointer = ctypes.c_void_p()
        self._check(
            "cudaIpcOpenMemHandle",
            self._cudart.cudaIpcOpenMemHandle(
                ctypes.byref(pointer), handle, _IPC_LAZY_ENABLE_PEER_ACCESS
            ),
        )
        return pointer.value or 0

    def close_ipc_handle(self, pointer: int, device_id: int) -> None:
        self._set_device(device_id)
        self._check("cudaIpcCloseMemHandle", self._cudart.cudaIpcCloseMemHandle(pointer))

    def allocation_size(self, pointer: int, device_id: int) -> int:
        self._set_device(device_id)  # makes the device's primary context current for the driver
        base, size = ctypes.c_uint64(0), ctypes.c_size_t(0)
        code = self._driver.cuMemGetAddressRange_v2(ctypes.byref(base), ctypes.byref(size), pointer)
        if code != 0:
            raise CudaRuntimeError("cuMemGetAddressRange", code, "driver error")
        return base.value + size.value - pointer

    def copy_to_host(self, host: np.ndarray, pointer: int, device_id: int) -> None:
        self._set_device(device_id)
        self._check(
            "cudaMemcpy",
            self._cudart.cudaMemcpy(host.ctypes.data, pointer, host.nbytes, _MEMCPY_DEVICE_TO_HOST),
        )

    def copy_to_device(self, pointer: int, host: np.ndarray, device_id: int) -> None:
        self._set_device(device_id)
        self._check(
            "cudaMemcpy",
            self._cudart.cudaMemcpy(pointer, host.ctypes.data, host.nbytes, _MEMCPY_HOST_TO_DEVICE),
        )
        # From pageable memory cudaMemcpy may return before the DMA lands; the client reads the
        # region from another process as soon as the response arrives, so wait for it.
        self._check("cudaStreamSynchronize", self._cudart.cudaStreamSynchronize(None))


def _package_dirs(name: str) -> list[Path]:
    """The folders of an installed (possibly namespace) package, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def _library_files() -> list[str]:
    """libcudart files in the CUDA runtime wheels (CUDA 12, then 13) and in torch's lib folder."""
    files: list[Path] = []
    for root in _package_dirs("nvidia"):
        files += [root / "cuda_runtime/lib/libcudart.so.12", root / "cu13/lib/libcudart.so.13"]
    for root in _package_dirs("torch"):
        files += sorted((root / "lib").glob("libcudart*.so*"))
    return [str(path) for path in files if path.is_file()]


def library_candidates() -> list[str]:
    """Where libcudart may be, best first: files found in the wheels and torch, then names for
    the system loader."""
    return _library_files() + list(_LOADER_NAMES)


@functools.cache
def cuda_runtime_available() -> bool:
    """Whether CUDA shared memory can work here: a GPU is visible and a libcudart can be found.
    Opens no CUDA library (the GPU check asks the driver only)."""
    if not gpu_ids():
        return False
    return bool(_library_files()) or ctypes.util.find_library("cudart") is not None


def _open_library(name: str) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


_load_lock = threading.Lock()
_loaded: CudartLibrary | None = None


def load_cuda_runtime() -> CudartLibrary:
    """Open libcudart once and return it; UnsupportedError says why when there is no GPU, no
    library, or no library that works with this driver."""
    global _loaded
    with _load_lock:
        if _loaded is not None:
            return _loaded
        if not gpu_ids():
            raise UnsupportedError(NO_GPU_MESSAGE)
        driver = _open_library("libcuda.so.1")
        if driver is None:
            raise UnsupportedError(NO_GPU_MESSAGE)
        failures: list[str] = []
        for candidate in library_candidates():
            cudart = _open_library(candidate)
            if cudart is None:
                continue
            runtime = CudartLibrary(cudart, driver, candidate)
            try:
                # The first call initializes CUDA: a runtime newer than the driver fails here.
                runtime.device_count()
            except CudaRuntimeError as exc:
                failures.append(f"{candidate}: {exc}")
                continue
            _loaded = runtime
            return runtime
        if failures:
            raise UnsupportedError(
                "CUDA shared memory needs a CUDA runtime that works with this GPU driver; "
                + "; ".join(failures)
            )
        raise UnsupportedError(NO_LIBRARY_MESSAGE)
