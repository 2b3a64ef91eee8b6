"""HPACK header blocks (RFC 7541): decoding through the `hpack` package with a cache for the
blocks gRPC clients repeat, and stateless encoding of what the server sends.

A gRPC client sends nearly the same headers on every call and indexes them in the dynamic table,
so from the second call on a request's header block is a few one-byte "indexed field" entries.
hpack's decoder walks such a block entry by entry in Python; a dictionary lookup is far cheaper. A
block made only of one-byte indexed entries neither reads nor changes anything but the table, so
its decoding stays valid until a block that can change the table (any other block) is decoded.

Responses use "literal without indexing" entries only, so the client's table never depends on
what the server sent and the encoder keeps no state.
"""

from __future__ import annotations

import hpack

from .frames import COMPRESSION_ERROR, ENHANCE_YOUR_CALM, Http2ProtocolError

Headers = list[tuple[str, str]]


def _is_single_byte_indexed(block: bytes) -> bool:
    # 1xxxxxxx with xxxxxxx < 127 is a complete "indexed header field"; 0xFF starts a longer one.
    return min(block) >= 0x80 and 0xFF not in block


class HeaderDecoder:
    """One connection's HPACK decoder."""

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._cache: dict[bytes, Headers] = {}

    def decode(self, block: bytes) -> Headers:
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        try:
            fields = self._decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as exc:
            raise Http2ProtocolError(ENHANCE_YOUR_CALM, f"header list too large: {exc}") from None
        except hpack.HPACKError as exc:
            raise Http2ProtocolError(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        headers: Headers = [(_text(name), _text(value)) for name, value in fields]
        if block and _is_single_byte_indexed(block):
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[block] = headers
        else:
            self._cache.clear()  # the dynamic table may have changed
        return headers


def _text(value: bytes) -> str:
    """A header name or value as text. HTTP/2 allows any octets in values; one that is not UTF-8
    is read as Latin-1 (one character per byte, nothing lost) rather than failing: grpc-core
    accepts such metadata too, and the headers gRPC itself reads then simply do not match."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _integer(value: int, prefix_bits: int, first_byte: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte | value,))
    out = bytearray((first_byte | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: bytes) -> bytes:
    return _integer(len(value), 7) + value  # no Huffman coding


def encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A header block of literal-without-indexing entries (RFC 7541 section 6.2.2)."""
    return b"".join(b"\x00" + _string(name) + _string(value) for name, value in headers)
