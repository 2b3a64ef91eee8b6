"""gRPC over HTTP/2, the parts that are not HTTP/2: length-prefixed messages, compression,
timeouts, and the status trailers (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
"""

from __future__ import annotations

import base64
import struct
import zlib

import grpc

from ..http2.header_block import encode_headers

_PREFIX = struct.Struct(">BL")  # compressed flag, message length

#: grpc-encoding values the server reads.
SUPPORTED_ENCODINGS = ("identity", "gzip", "deflate")

#: The response headers that open every answer.
RESPONSE_HEADERS = encode_headers([(b":status", b"200"), (b"content-type", b"application/grpc")])
#: The trailers of a successful call.
OK_TRAILERS = encode_headers([(b"grpc-status", b"0")])

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class MessageError(Exception):
    """A request stream that does not frame gRPC messages correctly."""


def frame_message(data: bytes | memoryview) -> list[bytes | memoryview]:
    """The length prefix and the message, as parts to write (uncompressed)."""
    return [_PREFIX.pack(0, len(data)), data]


def decompress(data: bytes | memoryview, encoding: str) -> bytes:
    if encoding == "gzip":
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(data)
    raise MessageError(f"a compressed message without a supported grpc-encoding ({encoding!r})")


class MessageReader:
    """Cuts length-prefixed messages out of a stream's DATA, however it was split."""

    __slots__ = ("_buffer", "_encoding")

    def __init__(self, encoding: str) -> None:
        self._buffer = bytearray()
        self._encoding = encoding

    def feed(self, data: bytes) -> list[bytes | memoryview]:
        """The messages completed by `data`."""
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        messages: list[bytes | memoryview] = []
        view = memoryview(data)
        pos = 0
        end = len(data)
        while end - pos >= 5:
            compressed, length = _PREFIX.unpack_from(data, pos)
            stop = pos + 5 + length
            if stop > end:
                break
            message = view[pos + 5 : stop]
            if compressed == 1:
                message = memoryview(decompress(message, self._encoding))
            elif compressed:
                raise MessageError(f"bad compressed flag {compressed}")
            messages.append(message)
            pos = stop
        if pos < end:
            self._buffer += view[pos:]
        return messages

    @property
    def incomplete(self) -> bool:
        """Whether part of a message is still waiting."""
        return bool(self._buffer)


def parse_timeout(value: str) -> float | None:
    """grpc-timeout ("100m", "5S", ...) in seconds; None when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def _percent_encode(message: str) -> bytes:
    out = bytearray()
    for byte in message.encode("utf-8", "replace"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def status_headers(code: grpc.StatusCode, details: str, trailers_only: bool) -> bytes:
    """The header block ending a call: the trailers, or (before any response) the whole
    response as one "trailers-only" HEADERS frame."""
    headers: list[tuple[bytes, bytes]] = []
    if trailers_only:
        headers += [(b":status", b"200"), (b"content-type", b"application/grpc")]
    headers.append((b"grpc-status", str(code.value[0]).encode()))
    if details:
        headers.append((b"grpc-message", _percent_encode(details)))
    return encode_headers(headers)


def metadata_value(name: str, value: str) -> str | bytes:
    """A custom metadata value as grpc gives it to servicers: binary ones (-bin) decoded."""
    if name.endswith("-bin"):
        return base64.b64decode(value + "=" * (-len(value) % 4))
    return value
