"""The types every layer shares: tensors, requests, responses, and the datatype tables.

Hot-path types are slotted dataclasses holding numpy arrays (views where the wire format allows),
so that a frontend's decoded request reaches a backend without copies or conversions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, TridentError

# --------------------------------------------------------------------------------------------
# Datatypes: v2 protocol names <-> numpy dtypes <-> ModelConfig TYPE_* names.

#: v2 datatype -> numpy dtype. BYTES tensors are numpy object arrays of `bytes`.
#: BF16 has no numpy dtype; it travels as raw uint16 words.
DATATYPE_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
    "BF16": np.dtype(np.uint16),
}

#: numpy dtype -> v2 datatype (the inverse, for outputs a backend produced).
NUMPY_TO_DATATYPE: dict[np.dtype, str] = {
    dtype: name for name, dtype in DATATYPE_TO_NUMPY.items() if name != "BF16"
}
NUMPY_TO_DATATYPE[np.dtype(np.bytes_)] = "BYTES"
NUMPY_TO_DATATYPE[np.dtype(np.str_)] = "BYTES"

#: Bytes per element for fixed-size datatypes (BYTES is variable-sized and absent).
DATATYPE_SIZE: dict[str, int] = {
    name: dtype.itemsize for name, dtype in DATATYPE_TO_NUMPY.items() if name != "BYTES"
}

#: ModelConfig DataType enum name -> v2 datatype. TYPE_STRING is the protocol's BYTES.
CONFIG_TYPE_TO_DATATYPE: dict[str, str] = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
    "TYPE_BF16": "BF16",
}
DATATYPE_TO_CONFIG_TYPE: dict[str, str] = {v: k for k, v in CONFIG_TYPE_TO_DATATYPE.items()}


def datatype_of_array(array: np.ndarray) -> str:
    """The v2 datatype for a numpy array a backend produced."""
    try:
        return NUMPY_TO_DATATYPE[array.dtype]
    except KeyError:
        if array.dtype.kind in ("S", "U", "O"):
            return "BYTES"
        raise TridentError(f"numpy dtype {array.dtype} has no v2 datatype") from None


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


# --------------------------------------------------------------------------------------------
# BYTES tensors: each element is a 4-byte little-endian length followed by its bytes.


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """Flatten a BYTES tensor (object/bytes/str array) into the length-prefixed wire form."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, (bytes, bytearray, memoryview)):
            item = str(item).encode("utf-8")
        parts.append(len(item).to_bytes(4, "little"))
        parts.append(bytes(item))
    return b"".join(parts)


def deserialize_bytes_tensor(buffer: bytes | memoryview, count: int) -> np.ndarray:
    """Parse `count` length-prefixed elements; every length is checked against the buffer."""
    view = memoryview(buffer)
    if count * 4 > len(view):  # checked before allocating: the count comes from the client
        raise InvalidArgumentError(
            f"BYTES tensor of {count} elements needs at least {count * 4} bytes, got {len(view)}"
        )
    items = np.empty(count, dtype=np.object_)
    offset = 0
    end = len(view)
    for index in range(count):
        if offset + 4 > end:
            raise InvalidArgumentError(
                f"BYTES tensor holds fewer elements than its shape says: element {index} of "
                f"{count} starts past the end of the {end}-byte buffer"
            )
        length = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + length > end:
            raise InvalidArgumentError(
                f"BYTES element {index} declares {length} bytes but only {end - offset} remain "
                "in the buffer"
            )
        items[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != end:
        raise InvalidArgumentError(
            f"BYTES tensor has {end - offset} bytes left over after its {count} elements"
        )
    return items


# --------------------------------------------------------------------------------------------
# Tensors, requests, responses.


@dataclass(slots=True)
class SharedMemoryRef:
    """Where a tensor's bytes live in a registered shared-memory region."""

    region: str
    byte_size: int
    offset: int = 0


@dataclass(slots=True)
class Tensor:
    """A named tensor. `data` is None only while the bytes still sit in shared memory."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None
    shared_memory: SharedMemoryRef | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, and how it wants it returned."""

    name: str
    #: HTTP: return as binary data (None = the request's/server's default).
    binary: bool | None = None
    #: Classification extension: top-N "value:index[:label]" strings instead of the tensor.
    classification: int = 0
    shared_memory: SharedMemoryRef | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


class CancellationToken:
    """Set by a frontend when the client cancels or disconnects; read by schedulers and models."""

    __slots__ = ("_callbacks", "cancelled")

    def __init__(self) -> None:
        self.cancelled = False
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def add_callback(self, callback: Callable[[], None]) -> None:
        if self.cancelled:
            callback()
        else:
            self._callbacks.append(callback)


@dataclass(slots=True)
class InferenceRequest:
    """One inference request, as every frontend hands it to the core (runtime/core/inference.py).

    The core does not change it after routing: it runs an InFlightRequest
    (runtime/core/in_flight.py) that wraps it with the resolved version, the validated inputs
    and the responder."""

    model_name: str
    #: Requested version; 0 means "let the version policy choose" (the highest ready version).
    model_version: int = 0
    id: str = ""
    inputs: list[Tensor] = field(default_factory=list)
    #: Outputs the client named; empty means all of the model's outputs.
    outputs: list[RequestedOutput] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    timeout_us: int = 0
    sequence_id: int | str = 0
    sequence_start: bool = False
    sequence_end: bool = False
    arrival_ns: int = field(default_factory=time.monotonic_ns)
    cancellation: CancellationToken = field(default_factory=CancellationToken)
    #: The request's RequestTrace (runtime/observability/tracing.py) when it is traced; set by
    #: the frontend that sampled it, stamped by the core and the instance worker.
    trace: Any = None


@dataclass(slots=True)
class InferenceResponse:
    """One response. Decoupled models send any number; `final` marks the last for a request."""

    model_name: str = ""
    model_version: str = ""
    id: str = ""
    outputs: list[Tensor] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    error: TridentError | None = None
    final: bool = True
