"""System shared memory: regions a client registered, inputs read from them, outputs written.

A region is a POSIX shared-memory object (`/dev/shm/KEY`) mapped once at registration. Every
offset and size a client sends is checked against the region before any byte is touched.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass

import numpy as np

from trident.runtime.errors import (
    AlreadyExistsError,
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

SHM_ROOT = "/dev/shm"


@dataclass(frozen=True, slots=True)
class SystemShmRegionStatus:
    name: str
    key: str
    offset: int
    byte_size: int


class _Region:
    __slots__ = ("byte_size", "key", "mapping", "name", "offset")

    def __init__(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self.name = name
        self.key = key
        self.offset = offset
        self.byte_size = byte_size
        path = os.path.join(SHM_ROOT, key.lstrip("/"))
        if "/" in key.lstrip("/") or not key.strip("/"):
            raise InvalidArgumentError(f"shared memory key '{key}' is not a valid POSIX name")
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise InvalidArgumentError(
                f"unable to open shared memory region '{name}' with key '{key}': {exc.strerror}"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if offset < 0 or byte_size <= 0 or offset + byte_size > size:
                raise InvalidArgumentError(
                    f"shared memory region '{name}': offset {offset} + byte_size {byte_size} "
                    f"exceeds the {size}-byte object '{key}'"
                )
            self.mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def view(self, ref: SharedMemoryRef) -> memoryview:
        if ref.offset < 0 or ref.byte_size < 0 or ref.offset + ref.byte_size > self.byte_size:
            raise InvalidArgumentError(
                f"shared memory region '{self.name}' is {self.byte_size} bytes: offset "
                f"{ref.offset} + byte_size {ref.byte_size} runs past its end"
            )
        start = self.offset + ref.offset
        return memoryview(self.mapping)[start : start + ref.byte_size]

    def close(self) -> None:
        try:
            self.mapping.close()
        except BufferError:
            pass  # a response still holds a view; the mapping closes when it is dropped


#: Why a registration is refused under --allow-shared-memory=false (HTTP 403, PERMISSION_DENIED).
REGISTRATION_REFUSED = (
    "{kind} shared memory registration is refused: this server was started with "
    "--allow-shared-memory=false (send the tensors in the request instead, or restart the "
    "server with --allow-shared-memory=true)"
)


class SharedMemoryRegistry:
    """Registered system shared-memory regions, by name.

    With `allow_registration` false every register call is refused before any file is opened
    (`--allow-shared-memory=false`); status and unregister still answer.
    """

    def __init__(self, allow_registration: bool = True) -> None:
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()
        self.allow_registration = allow_registration

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not self.allow_registration:
            raise PermissionDeniedError(REGISTRATION_REFUSED.format(kind="system"))
        if not name:
            raise InvalidArgumentError("a shared memory region needs a name")
        with self._lock:
            if name in self._regions:
                raise AlreadyExistsError(
                    f"shared memory region '{name}' is already registered; unregister it first"
                )
            self._regions[name] = _Region(name, key, offset, byte_size)

    def unregister(self, name: str = "") -> None:
        """Unregister one region, or all of them when `name` is empty."""
        with self._lock:
            if not name:
                regions = list(self._regions.values())
                self._regions.clear()
            else:
                region = self._regions.pop(name, None)
                regions = [region] if region else []
        for region in regions:
            region.close()

    def status(self, name: str = "") -> list[SystemShmRegionStatus]:
        with self._lock:
            if name:
                if name not in self._regions:
                    raise NotFoundError(f"Unable to find system shared memory region: '{name}'")
                regions = [self._regions[name]]
            else:
                regions = list(self._regions.values())
        return [SystemShmRegionStatus(r.name, r.key, r.offset, r.byte_size) for r in regions]

    def _region(self, name: str) -> _Region:
        region = self._regions.get(name)
        if region is None:
            raise NotFoundError(f"Unable to find system shared memory region: '{name}'")
        return region

    def read_inputs(self, tensors: list[Tensor]) -> None:
        """Copy each shared-memory input into a numpy array (the region may change after the
        request returns, so the model gets its own copy)."""
        for tensor in tensors:
            ref = tensor.shared_memory
            if ref is None:
                continue
            view = self._region(ref.region).view(ref)
            count = element_count(tensor.shape)
            if tensor.datatype == "BYTES":
                tensor.data = deserialize_bytes_tensor(view, count).reshape(tensor.shape)
                continue
            dtype = DATATYPE_TO_NUMPY[tensor.datatype]
            if count * dtype.itemsize != ref.byte_size:
                raise InvalidArgumentError(
                    f"input '{tensor.name}': shape {list(tensor.shape)} of {tensor.datatype} "
                    f"needs {count * dtype.itemsize} bytes but shared_memory_byte_size is "
                    f"{ref.byte_size}"
                )
            tensor.data = np.frombuffer(view, dtype=dtype).reshape(tensor.shape).copy()

    def write_output(self, tensor: Tensor, ref: SharedMemoryRef) -> None:
        """Write an output into the region the client asked for."""
        assert tensor.data is not None
        if tensor.datatype == "BYTES":
            payload: bytes | memoryview = serialize_bytes_tensor(tensor.data)
        else:
            payload = np.ascontiguousarray(tensor.data).data.cast("B")
        if len(payload) > ref.byte_size:
            raise InvalidArgumentError(
                f"output '{tensor.name}' needs {len(payload)} bytes but shared memory region "
                f"'{ref.region}' was given {ref.byte_size}"
            )
        view = self._region(ref.region).view(ref)
        view[: len(payload)] = payload
        tensor.shared_memory = SharedMemoryRef(ref.region, len(payload), ref.offset)
