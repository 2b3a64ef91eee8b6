"""CUDA shared memory: GPU buffers a client registered, inputs read from them, outputs written.

A client allocates device memory, exports it as a CUDA IPC handle (`cudaIpcGetMemHandle`) and
registers the handle with a name, a device and a size. The server maps the allocation once, at
registration (`cudaIpcOpenMemHandle`), and copies tensors between it and host memory on each
request. Every offset and size a client sends is checked against the region before any byte
moves.

The CUDA runtime is opened on the first registration, never at startup: without a GPU,
registering answers UnsupportedError while status and unregister keep working (there is nothing
to list or remove). Region names share one namespace with system shared memory, as in Triton;
administration.py enforces that across the two registries.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from trident.runtime.errors import (
    AlreadyExistsError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from trident.runtime.types import (
    DATATYPE_TO_NUMPY,
    SharedMemoryRef,
    Tensor,
    deserialize_bytes_tensor,
    element_count,
    serialize_bytes_tensor,
)

from .cuda_runtime import (
    IPC_HANDLE_SIZE,
    CudaRuntime,
    CudaRuntimeError,
    cuda_runtime_available,
    load_cuda_runtime,
)
from .shared_memory import REGISTRATION_REFUSED


@dataclass(frozen=True, slots=True)
class CudaShmRegionStatus:
    name: str
    device_id: int
    byte_size: int


class _Mapping:
    """One opened IPC handle. Two region names may register the same handle; CUDA maps it once
    per process, so the mapping is shared and closed when its last region goes."""

    __slots__ = ("device_id", "pointer", "users")

    def __init__(self, pointer: int, device_id: int) -> None:
        self.pointer = pointer
        self.device_id = device_id
        self.users = 0


class _Region:
    __slots__ = ("byte_size", "closed", "device_id", "handle", "lock", "mapping", "name")

    def __init__(
        self, name: str, handle: bytes, device_id: int, byte_size: int, mapping: _Mapping
    ) -> None:
        self.name = name
        self.handle = handle
        self.device_id = device_id
        self.byte_size = byte_size
        self.mapping = mapping
        # Held for each copy, and to close: unregistering waits for a copy in flight.
        self.lock = threading.Lock()
        self.closed = False

    def address(self, ref: SharedMemoryRef) -> int:
        """The device address of `ref`, after checking it lies inside the region."""
        if ref.offset < 0 or ref.byte_size < 0 or ref.offset + ref.byte_size > self.byte_size:
            raise InvalidArgumentError(
                f"CUDA shared memory region '{self.name}' is {self.byte_size} bytes: offset "
                f"{ref.offset} + byte_size {ref.byte_size} runs past its end"
            )
        return self.mapping.pointer + ref.offset


class CudaSharedMemoryRegistry:
    """Registered CUDA shared-memory regions, by name.

    `runtime` is the CUDA binding; None (the server's case) opens libcudart on the first
    registration. Tests pass a fake backed by host memory. With `allow_registration` false
    every register call is refused before CUDA is touched (`--allow-shared-memory=false`).
    """

    def __init__(self, runtime: CudaRuntime | None = None, allow_registration: bool = True) -> None:
        self.allow_registration = allow_registration
        self._runtime = runtime
        self._regions: dict[str, _Region] = {}
        self._mappings: dict[tuple[bytes, int], _Mapping] = {}
        self._lock = threading.Lock()

    def available(self) -> bool:
        """Whether registering can work here (advertised as the `cuda_shared_memory` extension).
        Opens no CUDA library."""
        return self._runtime is not None or cuda_runtime_available()

    def __contains__(self, name: object) -> bool:
        return name in self._regions

    def register(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        """Map the allocation behind `raw_handle` (a cudaIpcMemHandle_t) on `device_id`."""
        if not self.allow_registration:
            raise PermissionDeniedError(REGISTRATION_REFUSED.format(kind="CUDA"))
        if not name:
            raise InvalidArgumentError("a CUDA shared memory region needs a name")
        if self._runtime is None:
            self._runtime = load_cuda_runtime()  # UnsupportedError without a GPU or libcudart
        runtime = self._runtime
        if len(raw_handle) != IPC_HANDLE_SIZE:
            raise InvalidArgumentError(
                f"CUDA shared memory region '{name}': raw_handle must be the "
                f"{IPC_HANDLE_SIZE}-byte cudaIpcMemHandle_t, got {len(raw_handle)} bytes"
            )
        if device_id < 0:
            raise InvalidArgumentError(
                f"CUDA shared memory region '{name}': device_id must not be negative"
            )
        if byte_size <= 0:
            raise InvalidArgumentError(
                f"CUDA shared memory region '{name}': byte_size must be positive"
            )
        with self._lock:
            if name in self._regions:
                raise AlreadyExistsError(
                    f"CUDA shared memory region '{name}' is already registered; unregister it first"
                )
            try:
                count = runtime.device_count()
            except CudaRuntimeError as exc:
                raise InternalError(f"CUDA shared memory region '{name}': {exc}") from None
            if device_id >= count:
                raise InvalidArgumentError(
                    f"CUDA shared memory region '{name}': device_id {device_id} is not a GPU "
                    f"this server sees (it sees {count})"
                )
            mapping = self._open(runtime, name, raw_handle, device_id)
            try:
                size = runtime.allocation_size(mapping.pointer, device_id)
            except CudaRuntimeError as exc:
                self._release(runtime, raw_handle, mapping)
                raise InvalidArgumentError(
                    f"failed to register CUDA shared memory region '{name}': {exc}"
                ) from None
            if byte_size > size:
                self._release(runtime, raw_handle, mapping)
                raise InvalidArgumentError(
                    f"failed to register CUDA shared memory region '{name}': byte_size "
                    f"{byte_size} exceeds the {size}-byte allocation behind the handle"
                )
            self._regions[name] = _Region(name, raw_handle, device_id, byte_size, mapping)

    def _open(self, runtime: CudaRuntime, name: str, raw_handle: bytes, device_id: int) -> _Mapping:
        key = (raw_handle, device_id)
        mapping = self._mappings.get(key)
        if mapping is None:
            try:
                pointer = runtime.open_ipc_handle(raw_handle, device_id)
            except CudaRuntimeError as exc:
                raise InvalidArgumentError(
                    f"failed to register CUDA shared memory region '{name}': the handle could "
                    f"not be opened on device {device_id} ({exc})"
                ) from None
            mapping = self._mappings[key] = _Mapping(pointer, device_id)
        mapping.users += 1
        return mapping

    def _release(self, runtime: CudaRuntime, raw_handle: bytes, mapping: _Mapping) -> None:
        """Drop one region's use of a mapping; close it when none is left (lock held)."""
        mapping.users -= 1
        if mapping.users == 0:
            del self._mappings[(raw_handle, mapping.device_id)]
            runtime.close_ipc_handle(mapping.pointer, mapping.device_id)

    def unregister(self, name: str = "") -> None:
        """Unregister one region, or all of them when `name` is empty. An unknown name is not an
        error (as in Triton)."""
        with self._lock:
            if not name:
                regions = list(self._regions.values())
                self._regions.clear()
            else:
                region = self._regions.pop(name, None)
                regions = [region] if region else []
            runtime = self._runtime
            failures: list[str] = []
            for region in regions:
                assert runtime is not None  # a region exists only once the runtime loaded
                with region.lock:
                    region.closed = True
                    try:
                        self._release(runtime, region.handle, region.mapping)
                    except CudaRuntimeError as exc:
                        failures.append(f"'{region.name}': {exc}")
        if failures:
            raise InternalError(
                "failed to unregister CUDA shared memory regions: " + "; ".join(failures)
            )

    def status(self, name: str = "") -> list[CudaShmRegionStatus]:
        with self._lock:
            if name:
                if name not in self._regions:
                    raise NotFoundError(f"Unable to find cuda shared memory region: '{name}'")
                regions = [self._regions[name]]
            else:
                regions = list(self._regions.values())
        return [CudaShmRegionStatus(r.name, r.device_id, r.byte_size) for r in regions]

    def _region(self, name: str) -> _Region:
        region = self._regions.get(name)
        if region is None:
            raise NotFoundError(f"Unable to find cuda shared memory region: '{name}'")
        return region

    def _copy(
        self, region: _Region, ref: SharedMemoryRef, host: np.ndarray, to_device: bool
    ) -> None:
        runtime = self._runtime
        assert runtime is not None
        with region.lock:
            if region.closed:  # unregistered between the lookup and now
                raise NotFoundError(f"Unable to find cuda shared memory region: '{region.name}'")
            address = region.address(ref)
            if host.nbytes == 0:
                return
            try:
                if to_device:
                    runtime.copy_to_device(address, host, region.device_id)
                else:
                    runtime.copy_to_host(host, address, region.device_id)
            except CudaRuntimeError as exc:
                raise InternalError(f"CUDA shared memory region '{region.name}': {exc}") from None

    def read_inputs(self, tensors: list[Tensor]) -> None:
        """Copy each shared-memory input from the GPU into a numpy array of its own."""
        for tensor in tensors:
            ref = tensor.shared_memory
            if ref is None:
                continue
            region = self._region(ref.region)
            count = element_count(tensor.shape)
            if tensor.datatype == "BYTES":
                raw = np.empty(ref.byte_size, dtype=np.uint8)
                self._copy(region, ref, raw, to_device=False)
                tensor.data = deserialize_bytes_tensor(raw.data, count).reshape(tensor.shape)
                continue
            dtype = DATATYPE_TO_NUMPY[tensor.datatype]
            if count * dtype.itemsize != ref.byte_size:
                raise InvalidArgumentError(
                    f"input '{tensor.name}': shape {list(tensor.shape)} of {tensor.datatype} "
                    f"needs {count * dtype.itemsize} bytes but shared_memory_byte_size is "
                    f"{ref.byte_size}"
                )
            data = np.empty(tensor.shape, dtype=dtype)
            self._copy(region, ref, data, to_device=False)
            tensor.data = data

    def write_output(self, tensor: Tensor, ref: SharedMemoryRef) -> None:
        """Copy an output into the region the client asked for."""
        assert tensor.data is not None
        if tensor.datatype == "BYTES":
            payload = np.frombuffer(serialize_bytes_tensor(tensor.data), dtype=np.uint8)
        else:
            payload = np.ascontiguousarray(tensor.data)
        if payload.nbytes > ref.byte_size:
            raise InvalidArgumentError(
                f"output '{tensor.name}' needs {payload.nbytes} bytes but shared memory region "
                f"'{ref.region}' was given {ref.byte_size}"
            )
        self._copy(self._region(ref.region), ref, payload, to_device=True)
        tensor.shared_memory = SharedMemoryRef(ref.region, payload.nbytes, ref.offset)
