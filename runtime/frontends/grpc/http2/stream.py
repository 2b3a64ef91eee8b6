"""One HTTP/2 stream's state on the server side, and what receives its events."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from . import frames as f


class StreamHandler(Protocol):
    """What receives a stream's events (the gRPC call)."""

    def data_received(self, data: bytes) -> None: ...

    def end_received(self) -> None: ...

    def reset_received(self) -> None:
        """The client reset the stream, or the connection was lost."""


class Stream:
    """One stream's state on the server side."""

    __slots__ = (
        "drained",
        "handler",
        "initial_window",
        "local_closed",
        "pending",
        "received",
        "remote_closed",
        "send_window",
        "stream_id",
        "trailers",
    )

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.stream_id = stream_id
        self.handler: StreamHandler | None = None
        self.send_window = send_window
        #: The peer's SETTINGS_INITIAL_WINDOW_SIZE that `send_window` reflects: a later change
        #: is applied when the stream is next used (`Http2Connection._settle`), so a SETTINGS
        #: frame never walks every stream.
        self.initial_window = send_window
        #: Data waiting for flow-control window, then the trailers to send after it.
        self.pending: deque[memoryview] = deque()
        self.trailers: bytes | None = None
        #: Bytes received since the last WINDOW_UPDATE for this stream.
        self.received = 0
        self.remote_closed = False
        self.local_closed = False
        #: Set while someone waits for `pending` to empty.
        self.drained: asyncio.Future[None] | None = None


class PartialHeaders:
    """A header block still waiting for its CONTINUATION frames."""

    __slots__ = ("flags", "fragments", "size", "stream_id")

    def __init__(self, stream_id: int, flags: int, fragments: list[bytes], size: int) -> None:
        self.stream_id = stream_id
        self.flags = flags
        self.fragments = fragments
        self.size = size


def strip_padding(payload: bytes) -> bytes:
    """A padded frame's payload without its pad length and padding (RFC 9113 section 6.1)."""
    if not payload:
        raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]
