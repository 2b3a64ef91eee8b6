"""Response compression for /infer, as Triton does it: gzip or deflate when the client's
Accept-Encoding asks for them, at level 1, off the event loop for large bodies."""

from __future__ import annotations

import asyncio
import gzip
import zlib

#: Bigger responses are compressed in a worker thread so the event loop keeps serving.
INLINE_COMPRESSION_LIMIT = 64 * 1024


def response_compression(accept_encoding: str) -> str:
    """The coding Triton picks for an infer response: the highest-weighted of gzip/deflate in
    Accept-Encoding, else identity (so brotli is never chosen, whatever the client offers)."""
    chosen, weight = "identity", 0.0
    for entry in accept_encoding.split(","):
        coding, _, params = entry.strip().partition(";")
        coding = coding.strip().lower()
        entry_weight = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                entry_weight = float(params[2:])
            except ValueError:
                continue
        if coding in ("identity", "gzip", "deflate") and entry_weight > weight:
            chosen, weight = coding, entry_weight
    return chosen


def compress(payload: bytes, coding: str) -> bytes:
    # Level 1: most of the size reduction for a fraction of the default level's CPU time.
    if coding == "gzip":
        return gzip.compress(payload, compresslevel=1)
    # HTTP "deflate" is the zlib format (tritonclient decodes it with zlib.decompress).
    return zlib.compress(payload, 1)


async def compressed(payload: bytes, accept_encoding: str) -> tuple[bytes, str]:
    """`payload` in the coding the client prefers, and that coding ("identity": unchanged)."""
    coding = response_compression(accept_encoding)
    if coding == "identity":
        return payload, coding
    if len(payload) > INLINE_COMPRESSION_LIMIT:
        return await asyncio.to_thread(compress, payload, coding), coding
    return compress(payload, coding), coding
