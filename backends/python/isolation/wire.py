"""The control channel between the server and an isolated model's process.

A frame is a fixed 12-byte binary header (kind, flags, tag, payload length) and a payload. A
frame that carries requests or responses has the payload

    data length (u64) | tensor bytes (data length bytes) | compact JSON metadata

The metadata holds ids, flags and parameters and, for each tensor, its name, datatype, shape and
where its bytes lie: in the frame's own data (a message whose tensors hold up to
INLINE_TENSOR_BYTES in all: one copy each way, and no ring block to reserve, map and release,
which costs more than copying a few kilobytes) or in shared memory (shm.py, every larger
message). Nothing is pickled: JSON is parsed by C code, safe against a broken or hostile model
process, and cheaper in Python than a field-by-field binary layout.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trident.runtime import errors
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.types import (
    DATATYPE_TO_NUMPY,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    deserialize_bytes_tensor,
    serialize_bytes_tensor,
)
from trident.runtime.types import InferenceRequest as RuntimeRequest

from .shm import Block, RingReader, RingWriter

#: kind (u8), flags (u8), reserved (u16), tag (u32), payload length (u32).
HEADER = struct.Struct("<BBHII")
#: A frame's payload holds metadata and small tensors only; anything larger is a broken or
#: hostile peer.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
#: A message whose tensors hold at most this many bytes in all carries them in its frame;
#: larger ones go through shared memory.
INLINE_TENSOR_BYTES = 64 * 1024
#: The data length that starts a request or response payload.
_DATA_LENGTH = struct.Struct("<Q")
#: Tensors in a frame's data start at multiples of this (numpy's widest scalar).
_DATA_ALIGNMENT = 16


class Kind(enum.IntEnum):
    """What a frame carries. Tags name the batch, request or BLS call it is about."""

    # server -> model process
    INIT = 1  # JSON: what to load
    EXECUTE = 2  # tag: batch id; payload: requests
    CANCEL = 3  # tag: request tag
    BLS_RESPONSE = 4  # tag: BLS call id; flags: FINAL / END
    FINALIZE = 5
    # model process -> server
    READY = 16  # payload: JSON facts about the loaded model
    LOAD_FAILED = 17  # payload: the error message
    EXEC_DONE = 18  # tag: batch id; flags: RESPONSES / FAILED; payload: responses or error
    RESPONSE = 19  # tag: request tag; flags: FINAL; payload: one response
    BLS_REQUEST = 20  # tag: BLS call id; flags: STREAM; payload: one request
    BLS_CANCEL = 21  # tag: BLS call id
    LOG = 22  # flags: level / 10; payload: logger, file, line, message
    FINALIZED = 23


class Flag(enum.IntEnum):
    """Bits of a frame's flags. An IntEnum, not an IntFlag: `flags & Flag.FINAL` is then plain
    int arithmetic (IntFlag's operators are Python code, about 0.7 us each, per frame)."""

    NONE = 0
    FINAL = 1
    END = 2  # a BLS stream ended (no response in this frame)
    RESPONSES = 4  # EXEC_DONE carries one response per request
    FAILED = 8  # EXEC_DONE: the whole batch failed; payload is the error
    STREAM = 16  # BLS_REQUEST: a decoupled call (any number of responses)
    POLL = 32  # EXECUTE: poll for the next batch after this one (no other batch is out)


def frame(kind: Kind, tag: int = 0, payload: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(kind, flags, 0, tag, len(payload)) + payload


_SEQUENCE_START = 1
_SEQUENCE_END = 2
_CANCELLED = 4
_loads = json.loads


def _make_dumps() -> Callable[[Any], str]:
    """Compact JSON through the C encoder made once (JSONEncoder.encode builds one per call,
    about as costly as encoding a small message)."""
    encoder = json.JSONEncoder(separators=(",", ":"), default=str)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return encoder.encode
    c_encoder = make(
        None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )

    def dumps(value: Any) -> str:
        return "".join(c_encoder(value, 0))

    return dumps


_dumps = _make_dumps()


def _payload(value: Any) -> bytes:
    return _dumps(value).encode()


# ------------------------------------------------------------------------------------- tensors


def _host_bytes(tensor: Tensor) -> np.ndarray:
    """The array whose bytes go into shared memory (BYTES tensors serialized first)."""
    array = tensor.data
    if array is None:
        raise errors.InternalError(f"tensor '{tensor.name}' has no data in host memory")
    if tensor.datatype == "BYTES":
        return np.frombuffer(serialize_bytes_tensor(array), np.uint8)
    return array


def write_tensors(tensors: list[Tensor], ring: RingWriter) -> tuple[list[Any], Block | None, bytes]:
    """Place the tensors' bytes: in the frame's data when they are small (returned), else in
    one block of `ring`. Returns the descriptors to send, [[block] or None, [name, datatype,
    shape, offset, nbytes], ...], the block, and the frame's data."""
    arrays = [_host_bytes(tensor) for tensor in tensors]
    offsets = []
    total = 0
    for array in arrays:
        offsets.append(total)
        total += (array.nbytes + _DATA_ALIGNMENT - 1) // _DATA_ALIGNMENT * _DATA_ALIGNMENT
    block: Block | None = None
    data = b""
    if total <= INLINE_TENSOR_BYTES:
        if total:
            parts = []
            for array in arrays:
                parts.append(array.tobytes())
                padding = -array.nbytes % _DATA_ALIGNMENT
                if padding:
                    parts.append(bytes(padding))
            data = b"".join(parts)
    else:
        block, memory = ring.reserve(total)
        try:
            for array, offset in zip(arrays, offsets, strict=True):
                if array.nbytes:
                    _copy_into(memory, block.offset + offset, array)
        finally:
            if memory is not ring.memory:
                memory.close()  # an overflow segment: the reader maps it by name
    described: list[Any] = [
        [block.segment, block.offset, block.size, block.end] if block is not None else None
    ]
    for tensor, array, offset in zip(tensors, arrays, offsets, strict=True):
        described.append(
            [tensor.name, tensor.datatype, [int(d) for d in tensor.shape], offset, array.nbytes]
        )
    return described, block, data


def _copy_into(memory: Any, offset: int, source: np.ndarray) -> None:
    """Copy `source` (any layout) to `memory` at `offset`; the view ends with the call, so the
    memory can be closed afterwards."""
    target = np.frombuffer(memory, np.uint8, source.nbytes, offset)
    np.copyto(target.view(source.dtype).reshape(source.shape), source)


def read_tensors(
    described: list[Any], ring: RingReader, copy: bool, data: memoryview | None = None
) -> tuple[list[Tensor], Block | None]:
    """The tensors `write_tensors` described: views of the frame's `data` or of shared memory,
    or copies of shared memory when `copy` (then the block is released at once). Every size
    and offset is checked."""
    first = described[0]
    block = Block(*(int(value) for value in first)) if first else None
    if block is not None and data:
        raise ValueError("tensors in shared memory and in the frame at once")
    memory: Any = ring.open(block) if block is not None else data
    limit = block.size if block is not None else (len(data) if data is not None else 0)
    base = block.offset if block is not None else 0
    tensors = []
    try:
        for name, datatype, shape_list, offset, nbytes in described[1:]:
            dtype = DATATYPE_TO_NUMPY[datatype]
            shape = tuple(int(dim) for dim in shape_list)
            if any(dim < 0 for dim in shape) or offset < 0 or nbytes < 0:
                raise ValueError(f"tensor '{name}' has a negative size")
            count = math.prod(shape)
            if memory is None or nbytes == 0:
                if datatype != "BYTES" and count:
                    raise ValueError(f"tensor '{name}' has no bytes for shape {shape}")
                tensors.append(Tensor(name, datatype, shape, np.empty(shape, dtype)))
                continue
            if offset + nbytes > limit:
                raise ValueError(f"tensor '{name}' lies outside its block")
            raw = np.frombuffer(memory, np.uint8, nbytes, base + offset)
            if datatype == "BYTES":
                values = deserialize_bytes_tensor(raw.data, count).reshape(shape)
            else:
                if nbytes != count * dtype.itemsize:
                    raise ValueError(f"tensor '{name}': {nbytes} bytes do not fit shape {shape}")
                values = raw.view(dtype).reshape(shape)
                if copy and block is not None:
                    values = values.copy()
            tensors.append(Tensor(name, datatype, shape, values))
    finally:
        if copy and block is not None:
            ring.release(block)
    return tensors, (None if copy else block)


def _split(payload: bytes | bytearray | memoryview) -> tuple[Any, memoryview]:
    """A request or response payload's metadata (parsed) and its tensor data."""
    view = memoryview(payload)
    start = _DATA_LENGTH.size
    if len(view) < start:
        raise ValueError("payload shorter than its data length")
    (length,) = _DATA_LENGTH.unpack_from(view)
    if length > len(view) - start:
        raise ValueError("payload shorter than its data")
    return _loads(bytes(view[start + length :])), view[start : start + length]


def _join(metadata: Any, data: bytes) -> bytes:
    return b"".join((_DATA_LENGTH.pack(len(data)), data, _dumps(metadata).encode()))


@dataclass(slots=True)
class DecodedRequest:
    """A request as it arrived from the other side, and the block its inputs are in."""

    tag: int
    request: RuntimeRequest
    block: Block | None = None


def encode_requests(
    items: Sequence[tuple[int, RuntimeRequest | InFlightRequest]], ring: RingWriter, version: int
) -> tuple[bytes, Block | None]:
    """An EXECUTE or BLS_REQUEST payload: each request's metadata, and its inputs' descriptors
    (all inputs in one block)."""
    metadata = []
    inputs: list[Tensor] = []
    for tag, request in items:
        flags = (_SEQUENCE_START if request.sequence_start else 0) | (
            _SEQUENCE_END if request.sequence_end else 0
        )
        if request.cancellation.cancelled:
            flags |= _CANCELLED
        metadata.append(
            [
                tag,
                flags,
                int(request.timeout_us),
                version,
                request.model_name,
                request.id,
                request.sequence_id,
                request.parameters or None,
                [output.name for output in request.outputs],
                len(request.inputs),
            ]
        )
        inputs.extend(request.inputs)
    described, block, data = write_tensors(inputs, ring)
    return _join([metadata, described], data), block


def decode_requests(
    payload: bytes | bytearray | memoryview, ring: RingReader, copy: bool
) -> tuple[list[DecodedRequest], Block | None]:
    """The requests of an EXECUTE or BLS_REQUEST payload. Inputs are views of the payload or
    of the ring (copies of the ring when `copy`): pass a payload the caller owns."""
    (metadata, described), data = _split(payload)
    tensors, block = read_tensors(described, ring, copy, data)
    decoded = []
    position = 0
    for item in metadata:
        tag, flags, timeout_us, version, model_name, request_id, correlation = item[:7]
        parameters, outputs, input_count = item[7:10]
        if not isinstance(correlation, (int, str)) or not isinstance(
            parameters, (dict, type(None))
        ):
            raise ValueError("malformed request metadata")
        inputs = tensors[position : position + int(input_count)]
        position += int(input_count)
        request = RuntimeRequest(
            model_name=str(model_name),
            model_version=max(int(version), 0),
            id=str(request_id),
            inputs=inputs,
            outputs=[RequestedOutput(str(name)) for name in outputs],
            parameters=parameters or {},
            timeout_us=max(int(timeout_us), 0),
            sequence_id=correlation,
            sequence_start=bool(flags & _SEQUENCE_START),
            sequence_end=bool(flags & _SEQUENCE_END),
        )
        if flags & _CANCELLED:
            request.cancellation.cancel()
        decoded.append(DecodedRequest(int(tag), request, block))
    if position != len(tensors):
        raise ValueError("requests and their inputs do not match")
    return decoded, block


# ------------------------------------------------------------------------------------- responses

_ERROR_CLASSES: dict[str, type[errors.TridentError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.TridentError)
}


def _error_fields(error: BaseException) -> list[str]:
    name = type(error).__name__ if isinstance(error, errors.TridentError) else "InternalError"
    return [name, str(error)]


def _error_from(fields: list[Any]) -> errors.TridentError:
    cls = _ERROR_CLASSES.get(str(fields[0]), errors.InternalError)
    return cls(str(fields[1]))


def encode_responses(
    responses: list[InferenceResponse], ring: RingWriter
) -> tuple[bytes, Block | None]:
    """Each response's error or parameters, final flag and output count; all outputs in one
    block."""
    metadata: list[Any] = []
    outputs: list[Tensor] = []
    for response in responses:
        if response.error is not None:
            metadata.append([response.final, _error_fields(response.error), None, 0])
            continue
        metadata.append([response.final, None, response.parameters or None, len(response.outputs)])
        outputs.extend(response.outputs)
    described, block, data = write_tensors(outputs, ring)
    return _join([metadata, described], data), block


def decode_responses(
    payload: bytes | bytearray | memoryview, ring: RingReader, model_name: str = ""
) -> list[InferenceResponse]:
    """Responses with their outputs copied out of shared memory (the block is freed at once)
    or views of the payload's data (pass a payload the caller owns)."""
    (metadata, described), data = _split(payload)
    tensors, _ = read_tensors(described, ring, copy=True, data=data)
    responses = []
    position = 0
    for final, error, parameters, count in metadata:
        if error is not None:
            responses.append(InferenceResponse(error=_error_from(error), final=bool(final)))
            continue
        if not isinstance(parameters, (dict, type(None))):
            raise ValueError("malformed response metadata")
        responses.append(
            InferenceResponse(
                model_name=model_name,
                outputs=tensors[position : position + int(count)],
                parameters=parameters or {},
                final=bool(final),
            )
        )
        position += int(count)
    if position != len(tensors):
        raise ValueError("responses and their outputs do not match")
    return responses


def encode_error(error: BaseException) -> bytes:
    return _payload(_error_fields(error))


def decode_error(payload: bytes | memoryview) -> errors.TridentError:
    return _error_from(_loads(bytes(payload)))


def encode_log(name: str, pathname: str, lineno: int, message: str) -> bytes:
    return _payload([name[:1000], pathname[:4000], max(lineno, 0), message])


def decode_log(payload: bytes | memoryview) -> tuple[str, str, int, str]:
    name, pathname, lineno, message = _loads(bytes(payload))
    return str(name), str(pathname), int(lineno), str(message)


class FrameBuffer:
    """Splits a byte stream into frames; `on_frame(kind, flags, tag, payload)` per frame."""

    __slots__ = ("_buffer", "_on_frame")

    def __init__(self, on_frame: Callable[[int, int, int, memoryview], None]) -> None:
        self._buffer = bytearray()
        self._on_frame = on_frame

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        size = len(buffer)
        while size - start >= HEADER.size:
            kind, flags, _, tag, length = HEADER.unpack_from(buffer, start)
            if length > MAX_PAYLOAD_BYTES:
                raise ValueError(f"frame payload of {length} bytes is over the limit")
            end = start + HEADER.size + length
            if end > size:
                break
            # A bytearray of its own: tensors in it become writable arrays of the receiver.
            payload = buffer[start + HEADER.size : end]
            start = end
            self._on_frame(kind, flags, tag, memoryview(payload))
        if start:
            del buffer[:start]
