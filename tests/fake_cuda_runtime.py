"""A stand-in for the CUDA runtime (trident.runtime.core.cuda_runtime.CudaRuntime) whose "device
memory" is host memory, so CUDA shared memory is tested on machines without a GPU.

It behaves like CUDA where the registry depends on it: an unknown handle fails to open, a handle
already open in this process fails to open again (the registry must share the mapping), and any
copy outside an allocation, or on the wrong device, fails the test instead of touching memory.
"""

from __future__ import annotations

import base64
import itertools

import numpy as np

from trident.runtime.core.cuda_runtime import IPC_HANDLE_SIZE, CudaRuntimeError

_INVALID_HANDLE = 400  # cudaErrorInvalidResourceHandle
_ALREADY_MAPPED = 208  # cudaErrorAlreadyMapped


class _Allocation:
    def __init__(self, base: int, byte_size: int, device_id: int) -> None:
        self.base = base
        self.memory = np.zeros(byte_size, dtype=np.uint8)
        self.device_id = device_id
        self.open_count = 0


class FakeCudaRuntime:
    """Device allocations backed by numpy arrays at made-up, non-overlapping addresses."""

    def __init__(self, devices: int = 2) -> None:
        self.devices = devices
        self._allocations: dict[bytes, _Allocation] = {}
        self._addresses = itertools.count(0x7F00_0000_0000, 0x1_0000_0000)
        self.copies = 0

    # ------------------------------------------------------------------ the client's side

    def allocate(self, byte_size: int, device_id: int = 0) -> bytes:
        """cudaMalloc + cudaIpcGetMemHandle: returns the 64-byte handle."""
        base = next(self._addresses)
        handle = base.to_bytes(8, "little").ljust(IPC_HANDLE_SIZE, b"\x01")
        self._allocations[handle] = _Allocation(base, byte_size, device_id)
        return handle

    def allocate_b64(self, byte_size: int, device_id: int = 0) -> bytes:
        """The handle as tritonclient's cuda_shared_memory.get_raw_handle returns it."""
        return base64.b64encode(self.allocate(byte_size, device_id))

    def memory(self, handle: bytes) -> np.ndarray:
        """The allocation's bytes, to fill inputs and read outputs."""
        return self._allocations[handle].memory

    def open_mappings(self) -> int:
        return sum(allocation.open_count for allocation in self._allocations.values())

    # ------------------------------------------------------------------ CudaRuntime

    def device_count(self) -> int:
        return self.devices

    def open_ipc_handle(self, raw_handle: bytes, device_id: int) -> int:
        allocation = self._allocations.get(raw_handle)
        if allocation is None or allocation.device_id != device_id:
            raise CudaRuntimeError("cudaIpcOpenMemHandle", _INVALID_HANDLE, "invalid handle")
        if allocation.open_count:
            raise CudaRuntimeError("cudaIpcOpenMemHandle", _ALREADY_MAPPED, "already mapped")
        allocation.open_count += 1
        return allocation.base

    def close_ipc_handle(self, pointer: int, device_id: int) -> None:
        allocation = self._find(pointer, 0, device_id)
        assert allocation.open_count == 1 and pointer == allocation.base
        allocation.open_count -= 1

    def allocation_size(self, pointer: int, device_id: int) -> int:
        allocation = self._find(pointer, 0, device_id)
        return allocation.base + allocation.memory.nbytes - pointer

    def copy_to_host(self, host: np.ndarray, pointer: int, device_id: int) -> None:
        start, allocation = self._span(pointer, host.nbytes, device_id)
        host.reshape(-1).view(np.uint8)[:] = allocation.memory[start : start + host.nbytes]
        self.copies += 1

    def copy_to_device(self, pointer: int, host: np.ndarray, device_id: int) -> None:
        start, allocation = self._span(pointer, host.nbytes, device_id)
        allocation.memory[start : start + host.nbytes] = host.reshape(-1).view(np.uint8)
        self.copies += 1

    # ------------------------------------------------------------------ checks

    def _find(self, pointer: int, byte_size: int, device_id: int) -> _Allocation:
        for allocation in self._allocations.values():
            end = allocation.base + allocation.memory.nbytes
            if allocation.base <= pointer and pointer + byte_size <= end:
                assert allocation.open_count, "the allocation is not mapped in this process"
                assert allocation.device_id == device_id, "wrong device for this allocation"
                return allocation
        raise AssertionError(f"{byte_size} bytes at {pointer:#x} are outside every allocation")

    def _span(self, pointer: int, byte_size: int, device_id: int) -> tuple[int, _Allocation]:
        allocation = self._find(pointer, byte_size, device_id)
        return pointer - allocation.base, allocation
