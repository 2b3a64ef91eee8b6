"""The control channel between the server and an isolated model's process.

A frame is a fixed 12-byte header (kind, flags, tag, payload length) and a compact binary
payload: request and response metadata (ids, flags, parameters as JSON) and, for each tensor, its
name, datatype, shape and where its bytes lie in shared memory (shm.py). Tensor bytes never
travel in a frame, and nothing is pickled.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trident.runtime import errors
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
#: A frame's payload holds metadata only; anything larger is a broken or hostile peer.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


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


class Flag(enum.IntFlag):
    NONE = 0
    FINAL = 1
    END = 2  # a BLS stream ended (no response in this frame)
    RESPONSES = 4  # EXEC_DONE carries one response per request
    FAILED = 8  # EXEC_DONE: the whole batch failed; payload is the error
    STREAM = 16  # BLS_REQUEST: a decoupled call (any number of responses)


def frame(kind: Kind, tag: int = 0, payload: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(kind, flags, 0, tag, len(payload)) + payload


_DATATYPES = tuple(DATATYPE_TO_NUMPY)
_DATATYPE_CODES = {name: code for code, name in enumerate(_DATATYPES)}
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
#: datatype, ndim, segment, offset, nbytes (after the name).
_TENSOR = struct.Struct("<BBIQQ")
#: flags, timeout_us, model_version, correlation kind, correlation int.
_REQUEST = struct.Struct("<BQqBq")
_BLOCK = struct.Struct("<IQQQ")
_SEQUENCE_START = 1
_SEQUENCE_END = 2
_CANCELLED = 4


class Writer:
    """Appends fields to a payload."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, value: int) -> None:
        self.parts.append(_U8.pack(value))

    def u16(self, value: int) -> None:
        self.parts.append(_U16.pack(value))

    def u32(self, value: int) -> None:
        self.parts.append(_U32.pack(value))

    def text(self, value: str) -> None:
        data = value.encode()
        self.parts.append(_U16.pack(len(data)) + data)

    def long_text(self, value: str) -> None:
        data = value.encode()
        self.parts.append(_U32.pack(len(data)) + data)

    def raw(self, data: bytes) -> None:
        self.parts.append(data)

    def payload(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    """Reads fields from a payload; every length is checked against what is left."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = data
        self._offset = 0

    def _take(self, size: int) -> bytes | memoryview:
        end = self._offset + size
        if end > len(self._data):
            raise ValueError("truncated frame payload")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        if self._offset + layout.size > len(self._data):
            raise ValueError("truncated frame payload")
        values = layout.unpack_from(self._data, self._offset)
        self._offset += layout.size
        return values

    def u8(self) -> int:
        return int(self.unpack(_U8)[0])

    def u16(self) -> int:
        return int(self.unpack(_U16)[0])

    def u32(self) -> int:
        return int(self.unpack(_U32)[0])

    def text(self) -> str:
        return bytes(self._take(self.u16())).decode()

    def long_text(self) -> str:
        return bytes(self._take(self.u32())).decode()


# ------------------------------------------------------------------------------------- tensors


@dataclass(slots=True)
class PendingTensor:
    """A tensor on its way into shared memory: its bytes (BYTES tensors serialized first)."""

    tensor: Tensor
    array: np.ndarray
    nbytes: int
    offset: int = 0


def _prepare(tensor: Tensor) -> PendingTensor:
    array = tensor.data
    if array is None:
        raise errors.InternalError(f"tensor '{tensor.name}' has no data in host memory")
    if tensor.datatype == "BYTES":
        serialized = np.frombuffer(serialize_bytes_tensor(array), np.uint8)
        return PendingTensor(tensor, serialized, serialized.nbytes)
    return PendingTensor(tensor, array, array.nbytes)


def write_tensors(
    writer: Writer, tensors: list[Tensor], ring: RingWriter
) -> tuple[Block | None, list[PendingTensor]]:
    """Copy the tensors' bytes into one block of `ring` and describe them in `writer`."""
    pending = [_prepare(tensor) for tensor in tensors]
    total = 0
    for item in pending:
        item.offset = total
        total += (item.nbytes + 63) // 64 * 64
    block: Block | None = None
    if total:
        block, memory = ring.reserve(total)
        try:
            for item in pending:
                if item.nbytes:
                    start = block.offset + item.offset
                    target = np.frombuffer(memory, np.uint8, item.nbytes, start)
                    source = item.array
                    if source.dtype == np.object_:  # unreachable: BYTES were serialized
                        raise errors.InternalError("object arrays cannot be shared")
                    np.copyto(target.view(source.dtype).reshape(source.shape), source)
        finally:
            if memory is not ring.memory:
                memory.close()
    writer.raw(
        _BLOCK.pack(
            *(block.segment, block.offset, block.size, block.end) if block else (0, 0, 0, 0)
        )
    )
    writer.u16(len(pending))
    for item in pending:
        tensor = item.tensor
        writer.text(tensor.name)
        shape = tuple(int(dim) for dim in tensor.shape)
        writer.raw(
            _TENSOR.pack(_DATATYPE_CODES[tensor.datatype], len(shape), 0, item.offset, item.nbytes)
        )
        writer.raw(struct.pack(f"<{len(shape)}q", *shape))
    return block, pending


def read_tensors(reader: Reader, ring: RingReader, copy: bool) -> tuple[list[Tensor], Block | None]:
    """The tensors a frame describes: views of shared memory, or copies when `copy` (then the
    block is released at once)."""
    segment, offset, size, end = reader.unpack(_BLOCK)
    block = Block(segment, offset, size, end) if size else None
    memory = ring.open(block) if block is not None else None
    count = reader.u16()
    tensors = []
    try:
        for _ in range(count):
            name = reader.text()
            code, ndim, _, tensor_offset, nbytes = reader.unpack(_TENSOR)
            if code >= len(_DATATYPES):
                raise ValueError(f"unknown datatype code {code}")
            shape = tuple(int(dim) for dim in reader.unpack(struct.Struct(f"<{ndim}q")))
            datatype = _DATATYPES[code]
            if block is None or nbytes == 0:
                data = np.empty(
                    shape, DATATYPE_TO_NUMPY[datatype] if datatype != "BYTES" else object
                )
                if datatype != "BYTES" and data.nbytes:
                    raise ValueError(f"tensor '{name}' has no bytes for shape {shape}")
                tensors.append(Tensor(name, datatype, shape, data))
                continue
            if tensor_offset + nbytes > block.size:
                raise ValueError(f"tensor '{name}' lies outside its block")
            assert memory is not None
            raw = np.frombuffer(memory, np.uint8, nbytes, block.offset + tensor_offset)
            if datatype == "BYTES":
                count_elements = int(np.prod(shape)) if shape else 1
                data = deserialize_bytes_tensor(raw, count_elements).reshape(shape)
            else:
                dtype = DATATYPE_TO_NUMPY[datatype]
                if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                    raise ValueError(f"tensor '{name}': {nbytes} bytes do not fit shape {shape}")
                data = raw.view(dtype).reshape(shape)
                if copy:
                    data = data.copy()
            tensors.append(Tensor(name, datatype, shape, data))
    finally:
        if copy and block is not None:
            ring.release(block)
    return tensors, (None if copy else block)


# ------------------------------------------------------------------------------------- requests


@dataclass(slots=True)
class DecodedRequest:
    """A request as it arrived from the other side, and the block its inputs are in."""

    tag: int
    request: RuntimeRequest
    block: Block | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _parameters_text(parameters: dict[str, Any]) -> str:
    return json.dumps(parameters, default=str) if parameters else ""


def write_request(writer: Writer, tag: int, request: RuntimeRequest, version: int) -> None:
    """The metadata of one request (its inputs go through `write_tensors` separately)."""
    flags = (_SEQUENCE_START if request.sequence_start else 0) | (
        _SEQUENCE_END if request.sequence_end else 0
    )
    if request.cancellation.cancelled:
        flags |= _CANCELLED
    correlation = request.sequence_id
    writer.u32(tag)
    writer.raw(
        _REQUEST.pack(
            flags,
            max(int(request.timeout_us), 0),
            version,
            1 if isinstance(correlation, str) else 0,
            0 if isinstance(correlation, str) else int(correlation),
        )
    )
    writer.text(request.model_name)
    writer.text(request.id)
    if isinstance(correlation, str):
        writer.text(correlation)
    writer.long_text(_parameters_text(request.parameters))
    writer.u16(len(request.outputs))
    for output in request.outputs:
        writer.text(output.name)


def read_request(reader: Reader) -> tuple[int, RuntimeRequest]:
    tag = reader.u32()
    flags, timeout_us, version, correlation_kind, correlation_int = reader.unpack(_REQUEST)
    model_name = reader.text()
    request_id = reader.text()
    correlation: int | str = reader.text() if correlation_kind else correlation_int
    parameters_text = reader.long_text()
    parameters = json.loads(parameters_text) if parameters_text else {}
    if not isinstance(parameters, dict):
        raise ValueError("request parameters must be a JSON object")
    outputs = [RequestedOutput(reader.text()) for _ in range(reader.u16())]
    request = RuntimeRequest(
        model_name=model_name,
        model_version=max(version, 0),
        id=request_id,
        outputs=outputs,
        parameters=parameters,
        timeout_us=timeout_us,
        sequence_id=correlation,
        sequence_start=bool(flags & _SEQUENCE_START),
        sequence_end=bool(flags & _SEQUENCE_END),
        resolved_version=max(version, 0),
    )
    if flags & _CANCELLED:
        request.cancellation.cancel()
    return tag, request


def encode_requests(
    items: list[tuple[int, RuntimeRequest]], ring: RingWriter, version: int
) -> tuple[bytes, Block | None]:
    """An EXECUTE or BLS_REQUEST payload: the requests' metadata, then all inputs in one block."""
    writer = Writer()
    writer.u16(len(items))
    inputs: list[Tensor] = []
    for tag, request in items:
        write_request(writer, tag, request, version)
        writer.u16(len(request.inputs))
        inputs.extend(request.inputs)
    block, _ = write_tensors(writer, inputs, ring)
    return writer.payload(), block


def decode_requests(
    payload: bytes | memoryview, ring: RingReader, copy: bool
) -> tuple[list[DecodedRequest], Block | None]:
    reader = Reader(payload)
    count = reader.u16()
    decoded: list[DecodedRequest] = []
    input_counts: list[int] = []
    for _ in range(count):
        tag, request = read_request(reader)
        decoded.append(DecodedRequest(tag, request))
        input_counts.append(reader.u16())
    tensors, block = read_tensors(reader, ring, copy)
    if sum(input_counts) != len(tensors):
        raise ValueError("requests name more inputs than the frame holds")
    position = 0
    for item, input_count in zip(decoded, input_counts, strict=True):
        item.request.inputs = tensors[position : position + input_count]
        item.request.inputs_by_name = {tensor.name: tensor for tensor in item.request.inputs}
        item.block = block
        position += input_count
    return decoded, block


# ------------------------------------------------------------------------------------- responses

_ERROR_CLASSES: dict[str, type[errors.TridentError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.TridentError)
}


def write_error(writer: Writer, error: BaseException) -> None:
    name = type(error).__name__ if isinstance(error, errors.TridentError) else "InternalError"
    writer.text(name)
    writer.long_text(str(error))


def read_error(reader: Reader) -> errors.TridentError:
    cls = _ERROR_CLASSES.get(reader.text(), errors.InternalError)
    return cls(reader.long_text())


def encode_responses(
    responses: list[InferenceResponse], ring: RingWriter
) -> tuple[bytes, Block | None]:
    """Responses' metadata (error or parameters, final) then all outputs in one block."""
    writer = Writer()
    writer.u16(len(responses))
    outputs: list[Tensor] = []
    for response in responses:
        if response.error is not None:
            writer.u8(1 | (2 if response.final else 0))
            write_error(writer, response.error)
            writer.u16(0)
            continue
        writer.u8(2 if response.final else 0)
        writer.long_text(_parameters_text(response.parameters))
        writer.u16(len(response.outputs))
        outputs.extend(response.outputs)
    block, _ = write_tensors(writer, outputs, ring)
    return writer.payload(), block


def decode_responses(
    payload: bytes | memoryview, ring: RingReader, model_name: str = ""
) -> list[InferenceResponse]:
    """Responses with their outputs copied out of shared memory (the block is freed at once)."""
    reader = Reader(payload)
    responses = []
    counts = []
    for _ in range(reader.u16()):
        flags = reader.u8()
        final = bool(flags & 2)
        if flags & 1:
            responses.append(InferenceResponse(error=read_error(reader), final=final))
        else:
            text = reader.long_text()
            parameters = json.loads(text) if text else {}
            responses.append(
                InferenceResponse(model_name=model_name, parameters=parameters, final=final)
            )
        counts.append(reader.u16())
    tensors, _ = read_tensors(reader, ring, copy=True)
    if sum(counts) != len(tensors):
        raise ValueError("responses name more outputs than the frame holds")
    position = 0
    for response, count in zip(responses, counts, strict=True):
        response.outputs = tensors[position : position + count]
        position += count
    return responses


def encode_error(error: BaseException) -> bytes:
    writer = Writer()
    write_error(writer, error)
    return writer.payload()


def decode_error(payload: bytes | memoryview) -> errors.TridentError:
    return read_error(Reader(payload))


def encode_log(name: str, pathname: str, lineno: int, message: str) -> bytes:
    writer = Writer()
    writer.text(name[:1000])
    writer.text(pathname[:4000])
    writer.u32(max(lineno, 0))
    writer.long_text(message)
    return writer.payload()


def decode_log(payload: bytes | memoryview) -> tuple[str, str, int, str]:
    reader = Reader(payload)
    return reader.text(), reader.text(), reader.u32(), reader.long_text()


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
            payload = bytes(buffer[start + HEADER.size : end])
            start = end
            self._on_frame(kind, flags, tag, memoryview(payload))
        if start:
            del buffer[:start]
