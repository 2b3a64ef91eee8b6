"""gRPC over HTTP/2, the parts that are not HTTP/2: length-prefixed messages, compression,
timeouts, and the status trailers (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import NamedTuple

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


#: Most bytes one zlib call inflates at a time: a compression bomb is cut off at the message size
#: limit without ever holding more than this past it.
_INFLATE_CHUNK = 4 * 1024 * 1024

#: Timeouts past this many seconds (about 3 years) are no deadline at all.
_LONGEST_TIMEOUT = 1e8


class MessageError(Exception):
    """A request stream that does not frame gRPC messages correctly: the call ends with `code`
    (INTERNAL, as grpc-core answers), the connection and its other calls go on."""

    code = grpc.StatusCode.INTERNAL


class MessageTooLarge(MessageError):
    """A message past the receive limit (RESOURCE_EXHAUSTED, as grpc-core answers)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def frame_message(data: bytes | memoryview) -> tuple[bytes, bytes | memoryview]:
    """The length prefix and the message, as parts to write (uncompressed)."""
    return _PREFIX.pack(0, len(data)), data


def decompress(data: bytes | memoryview, encoding: str, limit: int) -> bytes:
    """A compressed message inflated, in bounded steps that stop once it passes `limit` bytes."""
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise MessageError(f"a compressed message without a supported grpc-encoding ({encoding!r})")
    out = bytearray()
    tail: bytes | memoryview = data
    try:
        while not inflater.eof:
            chunk = inflater.decompress(tail, min(limit + 1 - len(out), _INFLATE_CHUNK))
            out += chunk
            if len(out) > limit:
                raise MessageTooLarge(f"Decompressed message larger than max (limit {limit})")
            tail = inflater.unconsumed_tail
            if not tail and not chunk:
                break  # all input read, nothing more comes out: a truncated stream
    except zlib.error as exc:
        raise MessageError(f"Decompression failed ({encoding}): {exc}") from None
    if not inflater.eof or inflater.unused_data:
        raise MessageError(f"Decompression failed ({encoding}): not one complete stream")
    return bytes(out)


class CompressedMessage(NamedTuple):
    """A message still compressed: `inflate()` may take a while (up to the size limit), so the
    call runs it off the event loop (zlib releases the GIL)."""

    data: memoryview
    encoding: str
    limit: int

    def inflate(self) -> bytes:
        return decompress(self.data, self.encoding, self.limit)


#: The default of --grpc-max-receive-message-size.
DEFAULT_MESSAGE_LIMIT = 64 * 1024 * 1024


class MessageReader:
    """Cuts length-prefixed messages out of a stream's DATA, however it was split.

    Each message's size is checked from its length prefix before any of it is kept, and the
    parts of an incomplete message are kept as they came and joined once, when it is complete
    (a message streamed in many frames costs linear time). With `inflate=False` compressed
    messages come out as `CompressedMessage`s for the caller to inflate where it likes."""

    __slots__ = ("_chunks", "_encoding", "_inflate", "_limit", "_needed", "held")

    def __init__(
        self, encoding: str, limit: int = DEFAULT_MESSAGE_LIMIT, inflate: bool = True
    ) -> None:
        self._chunks: list[bytes] = []
        #: Bytes of an incomplete message kept.
        self.held = 0
        self._needed = 5  # bytes that must be held before parsing can go on
        self._encoding = encoding
        self._limit = limit
        self._inflate = inflate

    def feed(self, data: bytes) -> list[bytes | memoryview | CompressedMessage]:
        """The messages completed by `data`."""
        if self._chunks:
            self.held += len(data)
            self._chunks.append(data)
            if self.held < self._needed:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
            self.held = 0
        messages: list[bytes | memoryview | CompressedMessage] = []
        view = memoryview(data)
        pos = 0
        end = len(data)
        limit = self._limit
        while end - pos >= 5:
            compressed, length = _PREFIX.unpack_from(data, pos)
            if compressed > 1:
                raise MessageError(f"bad compressed flag {compressed}")
            if length > limit:
                raise MessageTooLarge(f"Received message larger than max ({length} vs. {limit})")
            stop = pos + 5 + length
            if stop > end:
                self._needed = stop - pos
                break
            message = view[pos + 5 : stop]
            if not compressed:
                messages.append(message)
            elif self._encoding not in ("gzip", "deflate"):
                raise MessageError(
                    f"a compressed message without a supported grpc-encoding ({self._encoding!r})"
                )
            elif self._inflate:
                messages.append(memoryview(decompress(message, self._encoding, limit)))
            else:
                messages.append(CompressedMessage(message, self._encoding, limit))
            pos = stop
        else:
            self._needed = 5
        if pos < end:
            self._chunks.append(data[pos:] if pos else data)
            self.held = end - pos
        return messages

    @property
    def incomplete(self) -> bool:
        """Whether part of a message is still waiting."""
        return bool(self._chunks)


def parse_timeout(value: str) -> float | None:
    """grpc-timeout ("100m", "5S", ...) in seconds, None for a deadline too far to matter;
    ValueError when malformed (grpc-core ends such a call with INTERNAL)."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    # The spec says at most 8 digits; grpc-core takes more, so a few more are read here too.
    if unit is None or not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        raise ValueError(f"invalid grpc-timeout {value!r}")
    seconds = int(digits) * unit
    return seconds if seconds < _LONGEST_TIMEOUT else None


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
