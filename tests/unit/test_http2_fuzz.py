"""Property-based fuzzing of what the native gRPC server parses from clients: HTTP/2 frames, HPACK
header blocks, gRPC length-prefixed messages, gzip and deflate payloads, and the ModelInferRequest
splice. Arbitrary bytes may only raise the module's own errors, never allocate past the limits,
and what is encoded correctly comes back unchanged."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import hpack
import pytest
from google.protobuf.message import DecodeError
from hyperframe.frame import Frame, GoAwayFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trident.runtime.frontends.grpc import wire
from trident.runtime.frontends.grpc.http2 import frames
from trident.runtime.frontends.grpc.http2.connection import MAX_RECEIVE_FRAME, Http2Connection
from trident.runtime.frontends.grpc.http2.header_block import HeaderDecoder
from trident.runtime.frontends.grpc.http2.limits import Http2Limits
from trident.runtime.frontends.grpc.native.messages import (
    MessageError,
    MessageReader,
    MessageTooLarge,
    decompress,
)
from trident.runtime.protocol import grpc_service_pb2 as gs

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = Http2Limits(
    max_concurrent_streams=8,
    max_header_list_size=2048,
    max_resets_per_second=50,
    max_pending_control_frames=64,
    max_write_buffer_size=4096,
)


class Transport:
    """Takes whatever is written (a client that reads everything)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Sink:
    """A stream handler that keeps nothing."""

    def data_received(self, data: bytes) -> None:
        pass

    def end_received(self) -> None:
        pass

    def reset_received(self) -> None:
        pass


def _server() -> tuple[Http2Connection, Transport]:
    transport = Transport()
    connection = Http2Connection(lambda *args: Sink(), lambda connection: None, LIMITS)
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


def _goaway_codes(data: bytes) -> list[int]:
    codes = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        if isinstance(frame, GoAwayFrame):
            frame.parse_body(memoryview(data[9 : 9 + length]))
            codes.append(frame.error_code)
        data = data[9 + length :]
    return codes


def _check_connection_state(connection: Http2Connection, transport: Transport) -> None:
    # No error but the protocol's own: an unexpected one would end with INTERNAL_ERROR.
    assert frames.INTERNAL_ERROR not in _goaway_codes(bytes(transport.data))
    assert len(connection._buffer) <= MAX_RECEIVE_FRAME + frames.FRAME_HEADER_SIZE
    assert len(connection.streams) <= LIMITS.max_concurrent_streams
    partial = connection._partial_headers
    assert partial is None or partial.size <= LIMITS.max_header_list_size


# A frame: type (the known ones and a few unknown), flags, stream id, payload.
_frame = st.builds(
    lambda kind, flags, stream_id, payload: (
        (struct.pack(">L", len(payload))[1:] + bytes([kind, flags]) + stream_id.to_bytes(4, "big"))
        + payload
    ),
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x0A, 0xFF]),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 7, 0x7FFFFFFF, 0x80000001]),
    st.binary(max_size=64),
)


@FUZZ
@given(st.lists(_frame, max_size=40), st.integers(1, 64))
def test_any_sequence_of_frames_ends_in_a_protocol_error_at_worst(wire_frames, step):
    connection, transport = _server()
    data = frames.PREFACE + b"".join(wire_frames)
    for start in range(0, len(data), step):
        connection.data_received(data[start : start + step])
        _check_connection_state(connection, transport)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_after_the_preface_never_raise(data):
    connection, transport = _server()
    connection.data_received(frames.PREFACE + data)
    _check_connection_state(connection, transport)


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_header_blocks_raise_only_protocol_errors(block):
    decoder = HeaderDecoder(LIMITS.max_header_list_size)
    try:
        headers = decoder.decode(block)
    except frames.Http2ProtocolError:
        return
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in headers)


_header_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)


@FUZZ
@given(st.lists(st.tuples(_header_text.map(str.lower), _header_text), max_size=10))
def test_header_blocks_round_trip(headers):
    encoder = hpack.Encoder()
    decoder = HeaderDecoder(65536)
    for _ in range(2):  # the second time from the dynamic table (and the cache)
        assert decoder.decode(encoder.encode(headers)) == headers


def _framed(message: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(message).to_bytes(4, "big") + message


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 50))
def test_messages_round_trip_however_they_are_split(messages, step):
    data = b"".join(_framed(message) for message in messages)
    reader = MessageReader("identity", limit=300)
    out = []
    for start in range(0, len(data), step):
        out += [bytes(message) for message in reader.feed(data[start : start + step])]
    assert out == messages
    assert not reader.incomplete


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=12), st.sampled_from(["gzip", "deflate"]))
def test_the_message_reader_raises_only_message_errors_and_holds_at_most_one_message(
    chunks, encoding
):
    limit = 100
    reader = MessageReader(encoding, limit=limit)
    try:
        for chunk in chunks:
            for message in reader.feed(chunk):
                assert len(message) <= limit
            assert reader.held <= limit + 5 + 64  # one message, and the chunk it came with
    except MessageError:
        pass


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["gzip", "deflate"]))
def test_compression_round_trips_within_the_limit(data, encoding):
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    packed = compressor.compress(data) + compressor.flush()
    assert decompress(packed, encoding, len(data)) == data
    if data:
        with pytest.raises(MessageTooLarge):
            decompress(packed, encoding, len(data) - 1)
    reader = MessageReader(encoding, limit=max(len(data), len(packed)))
    (message,) = reader.feed(_framed(packed, True))
    assert bytes(message) == data


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["gzip", "deflate"]))
def test_arbitrary_compressed_payloads_raise_only_message_errors(data, encoding):
    try:
        assert len(decompress(data, encoding, 1000)) <= 1000
    except MessageError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_request_bytes_raise_only_decode_errors(data):
    try:
        rest, raw = wire.split_raw_input_contents(data)
    except DecodeError:
        return
    assert sum(len(chunk) for chunk in raw) + len(rest) <= len(data)


@FUZZ
@given(
    st.lists(st.binary(max_size=100), max_size=5),
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=3),
)
def test_the_request_splice_gives_what_protobuf_parses(payloads, name, parameters):
    request = gs.ModelInferRequest(model_name=name, id="x")
    for key, value in parameters.items():
        request.parameters[key].int64_param = value
    for index, payload in enumerate(payloads):
        request.inputs.add(name=f"IN{index}", datatype="UINT8", shape=[len(payload)])
        request.raw_input_contents.append(payload)
    data = request.SerializeToString()
    rest, raw = wire.split_raw_input_contents(data)
    parsed = gs.ModelInferRequest.FromString(rest)
    if raw:
        assert [bytes(chunk) for chunk in raw] == payloads
        parsed.raw_input_contents.extend(bytes(chunk) for chunk in raw)
    assert parsed == request
