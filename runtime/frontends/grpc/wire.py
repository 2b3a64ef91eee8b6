"""Zero-copy framing of ModelInfer messages: tensor bytes never go through protobuf objects.

protobuf's Python runtime (upb) copies every `bytes` field when it parses a message, again when a
field is read, again when one is set and again when the message is serialized. For tensors of
megabytes those copies cost more than the inference (perf/README.md, "Baselines"). So
the gRPC frontend registers its own (de)serializers for ModelInfer and ModelStreamInfer:

- requests: the top-level `raw_input_contents` fields are cut out of the wire bytes as
  memoryviews (what `np.frombuffer` then wraps); protobuf parses only the rest (names, shapes,
  parameters: small). Small requests, where the scan would cost more than it saves, are parsed by
  protobuf whole. The scan steps from field to field (a few per input), never byte by byte: a
  message with a field that is not length-delimited (ModelInferRequest has none at the top
  level) or with more than `MAX_SPLIT_FIELDS` top-level fields is handed to protobuf whole,
  whose C parser is linear, so no crafted message keeps a Python loop busy.
- responses: protobuf serializes only the metadata; each output's bytes are spliced in as a
  `raw_output_contents` field straight from its numpy array, in one join.

Both produce exactly the bytes the protobuf schema defines: any protobuf parser (tritonclient,
perf_analyzer's C++) reads them unchanged, since a message's fields may come in any order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from google.protobuf.message import DecodeError

from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.types import InferenceResponse, serialize_bytes_tensor

from .codec import FINAL_RESPONSE, encode_infer_metadata

#: Requests smaller than this are parsed by protobuf alone (measured: splitting pays from a few
#: tens of KB on).
SPLIT_THRESHOLD = 32 * 1024
#: Top-level fields the scan walks before leaving the message to protobuf (a request has a few
#: per input; only a crafted one has thousands).
MAX_SPLIT_FIELDS = 4096

# Field numbers from grpc_service.proto, and the tags of the fields written by hand.
_RAW_INPUT_FIELD = 7  # ModelInferRequest.raw_input_contents
_LENGTH_DELIMITED = 2
_RAW_OUTPUT_TAG = bytes([(6 << 3) | _LENGTH_DELIMITED])  # ModelInferResponse.raw_output_contents
_INFER_RESPONSE_TAG = bytes([(2 << 3) | _LENGTH_DELIMITED])  # ModelStreamInferResponse field 2

_FromString = gs.ModelInferRequest.FromString

#: What the ModelInfer / ModelStreamInfer handlers receive: the parsed message, and the raw input
#: buffers in order (memoryviews into the request bytes, or the message's own field).
InferRequestFrame = tuple[gs.ModelInferRequest, Sequence[bytes | memoryview]]


# ----------------------------------------------------------------------------- varints


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint in ModelInferRequest")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise DecodeError("varint longer than 64 bits in ModelInferRequest")


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ----------------------------------------------------------------------------- requests


def split_raw_input_contents(data: bytes) -> tuple[bytes, list[memoryview]]:
    """Cut the top-level raw_input_contents fields out of a serialized ModelInferRequest.

    Returns the other fields' bytes (for protobuf to parse) and one memoryview into `data` per
    raw_input_contents entry, in order; `(data, [])` when the message is left to protobuf whole
    (nothing cut, or not worth a Python scan). Raises DecodeError on malformed framing.
    """
    view = memoryview(data)
    end = len(data)
    pos = 0
    kept_from = 0
    kept: list[memoryview] = []
    raw: list[memoryview] = []
    fields = 0
    while pos < end:
        field_start = pos
        fields += 1
        if fields > MAX_SPLIT_FIELDS:
            return data, []
        key, pos = _read_varint(data, pos)
        wire_type = key & 7
        if wire_type != _LENGTH_DELIMITED:
            return data, []  # not a ModelInferRequest field: protobuf says what it is
        length, pos = _read_varint(data, pos)
        stop = pos + length
        if stop > end:
            raise DecodeError("field runs past the end of the ModelInferRequest")
        if key >> 3 == _RAW_INPUT_FIELD:
            raw.append(view[pos:stop])
            if field_start > kept_from:
                kept.append(view[kept_from:field_start])
            kept_from = stop
        pos = stop
    if pos != end:
        raise DecodeError("truncated field at the end of the ModelInferRequest")
    if not raw:
        return data, raw
    if kept_from < end:
        kept.append(view[kept_from:end])
    return b"".join(kept), raw


def read_infer_request(data: bytes) -> InferRequestFrame:
    """The request deserializer for ModelInfer and ModelStreamInfer."""
    if len(data) < SPLIT_THRESHOLD:
        msg = _FromString(data)
        return msg, msg.raw_input_contents
    rest, raw = split_raw_input_contents(data)
    msg = _FromString(rest)
    return msg, raw or msg.raw_input_contents


# ----------------------------------------------------------------------------- responses


def _output_payloads(response: InferenceResponse) -> list[bytes | np.ndarray]:
    """Each output's wire bytes, as buffers that bytes.join reads without another copy."""
    payloads: list[bytes | np.ndarray] = []
    for tensor in response.outputs:
        data = tensor.data
        if tensor.shared_memory is not None or data is None:
            payloads.append(b"")
        elif tensor.datatype == "BYTES":
            payloads.append(serialize_bytes_tensor(data))
        elif data.flags.c_contiguous:
            payloads.append(data)
        else:
            payloads.append(np.ascontiguousarray(data))
    return payloads


def _response_parts(metadata: bytes, payloads: list[bytes | np.ndarray]) -> tuple[list, int]:
    parts: list[bytes | np.ndarray] = [metadata]
    size = len(metadata)
    for payload in payloads:
        length = payload.nbytes if isinstance(payload, np.ndarray) else len(payload)
        prefix = _varint(length)
        parts.append(_RAW_OUTPUT_TAG)
        parts.append(prefix)
        parts.append(payload)
        size += 1 + len(prefix) + length
    return parts, size


def write_infer_response(response: InferenceResponse) -> bytes:
    """A serialized ModelInferResponse: one raw_output_contents entry per output, in order
    (empty for outputs written to shared memory)."""
    metadata = encode_infer_metadata(response).SerializeToString()
    parts, _ = _response_parts(metadata, _output_payloads(response))
    return b"".join(parts)


def write_stream_response(response: InferenceResponse, final: bool) -> bytes:
    """A serialized ModelStreamInferResponse carrying `response`, with triton_final_response."""
    metadata_msg = encode_infer_metadata(response)
    metadata_msg.parameters[FINAL_RESPONSE].bool_param = final
    parts, size = _response_parts(metadata_msg.SerializeToString(), _output_payloads(response))
    return b"".join([_INFER_RESPONSE_TAG, _varint(size), *parts])
