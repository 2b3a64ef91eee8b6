"""One HTTP/2 server connection: frames in and out, streams, and flow control (RFC 9113).

The connection knows nothing of gRPC. For each new stream it asks its `StreamOpener` for a
`StreamHandler`, passes it the stream's DATA and end-of-stream, and offers methods to answer:
`send_headers`, `send_data`, `send_trailers`, `reset_stream`. Outgoing frames collect in a buffer
that `flush()` writes with one `transport.write` (a response's HEADERS, DATA and trailers then
leave in one TCP segment); frames answering what `data_received` read are flushed when it ends,
and responses at the end of the loop iteration they complete in (`flush_soon`), together.

Flow control: the server opens large receive windows at once and replenishes them as data comes,
so clients never wait on it; data to send waits for the client's windows (per stream and for the
connection) and leaves as WINDOW_UPDATEs open them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from . import frames as f
from .header_block import HeaderDecoder, Headers

logger = logging.getLogger("trident.frontends.grpc")

#: What the server advertises.
RECEIVE_WINDOW = 16 * 1024 * 1024  # per stream
CONNECTION_RECEIVE_WINDOW = 64 * 1024 * 1024
MAX_RECEIVE_FRAME = 1024 * 1024
MAX_HEADER_LIST_SIZE = 64 * 1024


class StreamHandler(Protocol):
    """What receives a stream's events (the gRPC call)."""

    def data_received(self, data: bytes) -> None: ...

    def end_received(self) -> None: ...

    def reset_received(self) -> None:
        """The client reset the stream, or the connection was lost."""


#: Called with (connection, stream, request headers) for each new stream.
StreamOpener = Callable[["Http2Connection", "Stream", Headers], StreamHandler]


class Stream:
    """One stream's state on the server side."""

    __slots__ = (
        "drained",
        "handler",
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
        #: Data waiting for flow-control window, then the trailers to send after it.
        self.pending: deque[memoryview] = deque()
        self.trailers: bytes | None = None
        #: Bytes received since the last WINDOW_UPDATE for this stream.
        self.received = 0
        self.remote_closed = False
        self.local_closed = False
        #: Set while someone waits for `pending` to empty.
        self.drained: asyncio.Future[None] | None = None


class Http2Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection."""

    def __init__(self, open_stream: StreamOpener, on_close: Callable[[Http2Connection], None]):
        self._open_stream = open_stream
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._needed = len(f.PREFACE)  # bytes the next step needs before it can parse
        self._preface_seen = False
        self._out: list[bytes | memoryview] = []
        self._flush_scheduled = False
        self._decoder = HeaderDecoder(MAX_HEADER_LIST_SIZE)
        self.streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        #: A header block still waiting for CONTINUATION frames: (stream id, flags, fragments).
        self._partial_headers: tuple[int, int, list[bytes]] | None = None
        # Peer settings.
        self._peer_initial_window = f.DEFAULT_WINDOW_SIZE
        self._peer_max_frame = f.DEFAULT_MAX_FRAME_SIZE
        self._send_window = f.DEFAULT_WINDOW_SIZE
        #: Streams with data waiting for the connection's send window, in arrival order.
        self._blocked: dict[int, Stream] = {}
        self._received = 0  # connection-level bytes since the last WINDOW_UPDATE
        self._write_paused = False
        self._resumed: asyncio.Future[None] | None = None
        self.going_away = False
        self.closed = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._out.append(
            f.settings_frame(
                {
                    f.SETTINGS_ENABLE_PUSH: 0,
                    f.SETTINGS_INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                    f.SETTINGS_MAX_FRAME_SIZE: MAX_RECEIVE_FRAME,
                    f.SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                }
            )
        )
        self._out.append(
            f.window_update_frame(0, CONNECTION_RECEIVE_WINDOW - f.DEFAULT_WINDOW_SIZE)
        )
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self._buffer or len(data) < self._needed:
            self._buffer += data
            if len(self._buffer) < self._needed:
                return
            data = bytes(self._buffer)
            self._buffer.clear()
        try:
            if not self._preface_seen:
                if data[: len(f.PREFACE)] != f.PREFACE:
                    raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "not an HTTP/2 client preface")
                self._preface_seen = True
                data = data[len(f.PREFACE) :]
            self._parse(data)
        except f.Http2ProtocolError as exc:
            self._fail(exc.code, str(exc))
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._wake_drained(stream)
            if stream.handler is not None and not stream.local_closed:
                stream.handler.reset_received()
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._on_close(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None

    # ------------------------------------------------------------------ reading frames

    def _parse(self, data: bytes) -> None:
        pos = 0
        end = len(data)
        max_frame = MAX_RECEIVE_FRAME
        while end - pos >= f.FRAME_HEADER_SIZE:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > max_frame:
                raise f.Http2ProtocolError(f.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            stop = pos + f.FRAME_HEADER_SIZE + length
            if stop > end:
                self._buffer += data[pos:]
                self._needed = stop - pos
                return
            frame_type = data[pos + 3]
            flags = data[pos + 4]
            stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = data[pos + f.FRAME_HEADER_SIZE : stop]
            pos = stop
            if self._partial_headers is not None and frame_type != f.CONTINUATION:
                raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "expected a CONTINUATION frame")
            if frame_type == f.DATA:
                self._on_data(stream_id, flags, payload)
            elif frame_type == f.HEADERS:
                self._on_headers(stream_id, flags, payload)
            elif frame_type == f.WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif frame_type == f.SETTINGS:
                self._on_settings(flags, payload)
            elif frame_type == f.PING:
                if len(payload) != 8:
                    raise f.Http2ProtocolError(f.FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
                if not flags & f.FLAG_ACK:
                    self._out.append(f.frame(f.PING, f.FLAG_ACK, 0, payload))
            elif frame_type == f.RST_STREAM:
                self._on_rst_stream(stream_id)
            elif frame_type == f.CONTINUATION:
                self._on_continuation(stream_id, flags, payload)
            elif frame_type == f.GOAWAY:
                self.going_away = True
                if not self.streams:
                    self.close()
            elif frame_type == f.PUSH_PROMISE:
                raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "clients cannot push")
            # PRIORITY and unknown frame types are ignored (RFC 9113 sections 5.5 and 6.3).
        if pos < end:
            self._buffer += data[pos:]
        self._needed = f.FRAME_HEADER_SIZE

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._received += size
        if self._received >= CONNECTION_RECEIVE_WINDOW // 2:
            self._out.append(f.window_update_frame(0, self._received))
            self._received = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self._last_stream_id:
                raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream the server already finished or reset: drop it
        if flags & f.FLAG_PADDED:
            payload = _strip_padding(payload)
        end_stream = flags & f.FLAG_END_STREAM
        if not end_stream:
            stream.received += size
            if stream.received >= RECEIVE_WINDOW // 2:
                self._out.append(f.window_update_frame(stream_id, stream.received))
                stream.received = 0
        handler = stream.handler
        if handler is None:
            return
        if payload:
            handler.data_received(payload)
        if end_stream:
            stream.remote_closed = True
            self._forget_if_done(stream)
            handler.end_received()

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & f.FLAG_PADDED:
            payload = _strip_padding(payload)
        if flags & f.FLAG_PRIORITY:
            payload = payload[5:]
        if not flags & f.FLAG_END_HEADERS:
            self._partial_headers = (stream_id, flags, [payload])
            return
        self._on_header_block(stream_id, flags, payload)

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        partial = self._partial_headers
        if partial is None or partial[0] != stream_id:
            raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "unexpected CONTINUATION frame")
        partial[2].append(payload)
        if flags & f.FLAG_END_HEADERS:
            self._partial_headers = None
            self._on_header_block(stream_id, partial[1], b"".join(partial[2]))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always: the decoder's table must stay in step
        end_stream = bool(flags & f.FLAG_END_STREAM)
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client
            if not end_stream:
                raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "trailers without END_STREAM")
            if stream.remote_closed:
                return
            stream.remote_closed = True
            self._forget_if_done(stream)
            if stream.handler is not None:
                stream.handler.end_received()
            return
        if stream_id % 2 == 0 or stream_id <= self._last_stream_id:
            if stream_id <= self._last_stream_id and stream_id % 2:
                return  # a stream the server already closed
            raise f.Http2ProtocolError(f.PROTOCOL_ERROR, f"bad new stream id {stream_id}")
        self._last_stream_id = stream_id
        if self.going_away:
            self._out.append(f.rst_stream_frame(stream_id, f.REFUSED_STREAM))
            return
        stream = Stream(stream_id, self._peer_initial_window)
        self.streams[stream_id] = stream
        stream.handler = self._open_stream(self, stream, headers)
        if end_stream and not stream.remote_closed:
            stream.remote_closed = True
            self._forget_if_done(stream)
            stream.handler.end_received()

    def _on_rst_stream(self, stream_id: int) -> None:
        if stream_id == 0:
            raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        stream.remote_closed = stream.local_closed = True
        self._blocked.pop(stream_id, None)
        stream.pending.clear()
        self._wake_drained(stream)
        if stream.handler is not None:
            stream.handler.reset_received()

    def _on_settings(self, flags: int, payload: bytes) -> None:
        if flags & f.FLAG_ACK:
            return
        for key, value in f.parse_settings(payload):
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW_SIZE:
                    raise f.Http2ProtocolError(f.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE_LIMIT:
                    raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
        self._out.append(f.frame(f.SETTINGS, f.FLAG_ACK, 0))
        for stream in list(self.streams.values()):
            if stream.pending:
                self._send_pending(stream)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.Http2ProtocolError(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = f.read_u32(payload) & 0x7FFFFFFF
        if stream_id == 0:
            self._send_window += increment
            if self._send_window > f.MAX_WINDOW_SIZE:
                raise f.Http2ProtocolError(f.FLOW_CONTROL_ERROR, "connection window overflow")
            for stream in list(self._blocked.values()):
                if self._send_window <= 0:
                    break
                self._send_pending(stream)
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            if stream.pending:
                self._send_pending(stream)

    # ------------------------------------------------------------------ writing frames

    def send_headers(self, stream: Stream, block: bytes, end_stream: bool = False) -> None:
        """Queue a HEADERS frame (and CONTINUATIONs if the block is large)."""
        if stream.local_closed:
            return
        flags = f.FLAG_END_STREAM if end_stream else 0
        limit = self._peer_max_frame
        if len(block) <= limit:
            flags |= f.FLAG_END_HEADERS
            self._out.append(f.frame(f.HEADERS, flags, stream.stream_id, block))
        else:
            chunks = [block[i : i + limit] for i in range(0, len(block), limit)]
            self._out.append(f.frame(f.HEADERS, flags, stream.stream_id, chunks[0]))
            for chunk in chunks[1:-1]:
                self._out.append(f.frame(f.CONTINUATION, 0, stream.stream_id, chunk))
            self._out.append(
                f.frame(f.CONTINUATION, f.FLAG_END_HEADERS, stream.stream_id, chunks[-1])
            )
        if end_stream:
            self._close_local(stream)

    def send_data(self, stream: Stream, data: bytes | memoryview) -> None:
        """Queue DATA frames for as much of `data` as the windows allow; the rest waits."""
        if stream.local_closed or not data:
            return
        if stream.pending:
            stream.pending.append(memoryview(data))
            return
        size = len(data)
        if size <= min(self._send_window, stream.send_window, self._peer_max_frame):
            self._send_window -= size
            stream.send_window -= size
            self._out.append(f.frame_header(size, f.DATA, 0, stream.stream_id))
            self._out.append(data)
            return
        stream.pending.append(memoryview(data))
        self._send_pending(stream)

    def send_trailers(self, stream: Stream, block: bytes) -> None:
        """End the stream with a trailing HEADERS frame, after any data still waiting."""
        if stream.local_closed:
            return
        if stream.pending:
            stream.trailers = block
        else:
            self.send_headers(stream, block, end_stream=True)

    def reset_stream(self, stream: Stream, code: int) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self._blocked.pop(stream.stream_id, None)
        stream.pending.clear()
        stream.local_closed = stream.remote_closed = True
        self._out.append(f.rst_stream_frame(stream.stream_id, code))
        self._wake_drained(stream)

    def write_blocked(self, stream: Stream) -> bool:
        """Whether a writer should wait (`drained`) before sending more on `stream`."""
        return bool(stream.pending) or self._write_paused

    @property
    def peer(self) -> str:
        """The client's address, as grpc writes it ("ipv4:127.0.0.1:5555")."""
        address = self._transport.get_extra_info("peername") if self._transport else None
        if not address:
            return ""
        family = "ipv6" if ":" in str(address[0]) else "ipv4"
        return f"{family}:{address[0]}:{address[1]}"

    async def drained(self, stream: Stream) -> None:
        """Wait until the stream's data has left and the transport takes more writes."""
        loop = asyncio.get_running_loop()
        if stream.pending and not stream.local_closed:
            if stream.drained is None:
                stream.drained = loop.create_future()
            await stream.drained
        if self._write_paused and not self.closed:
            if self._resumed is None:
                self._resumed = loop.create_future()
            await asyncio.shield(self._resumed)

    def flush(self) -> None:
        """Write everything queued in one go."""
        self._flush_scheduled = False
        if not self._out or self._transport is None:
            return
        out, self._out = self._out, []
        if not self.closed:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def flush_soon(self) -> None:
        """Flush once the event loop has run what is ready now: the responses that complete in
        the same loop iteration (a batch's, or those of requests read together) then leave in
        one write instead of one each."""
        if not self._flush_scheduled and self._out:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def go_away(self) -> None:
        """Tell the client to open no new streams; the open ones finish."""
        if self.going_away and self.closed:
            return
        self.going_away = True
        self._out.append(f.goaway_frame(self._last_stream_id, f.NO_ERROR))
        self.flush()
        if not self.streams:
            self.close()

    def close(self) -> None:
        self.flush()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # ------------------------------------------------------------------ internals

    def _send_pending(self, stream: Stream) -> None:
        pending = stream.pending
        while pending:
            allowed = min(self._send_window, stream.send_window, self._peer_max_frame)
            if allowed <= 0:
                if self._send_window <= 0:
                    self._blocked[stream.stream_id] = stream
                return
            chunk = pending[0]
            if len(chunk) <= allowed:
                pending.popleft()
            else:
                pending[0] = chunk[allowed:]
                chunk = chunk[:allowed]
            size = len(chunk)
            self._send_window -= size
            stream.send_window -= size
            self._out.append(f.frame_header(size, f.DATA, 0, stream.stream_id))
            self._out.append(chunk)
        self._blocked.pop(stream.stream_id, None)
        if stream.trailers is not None:
            trailers, stream.trailers = stream.trailers, None
            self.send_headers(stream, trailers, end_stream=True)
        self._wake_drained(stream)

    def _close_local(self, stream: Stream) -> None:
        stream.local_closed = True
        if not stream.remote_closed:
            # The answer is complete: the client need not send the rest (as gRPC servers do).
            self._out.append(f.rst_stream_frame(stream.stream_id, f.NO_ERROR))
            stream.remote_closed = True
        self._forget_if_done(stream)

    def _forget_if_done(self, stream: Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(stream.stream_id, None)
            self._blocked.pop(stream.stream_id, None)
            self._wake_drained(stream)
            if self.going_away and not self.streams:
                self.close()

    @staticmethod
    def _wake_drained(stream: Stream) -> None:
        if stream.drained is not None and not stream.drained.done():
            stream.drained.set_result(None)
        stream.drained = None

    def _fail(self, code: int, message: str) -> None:
        logger.warning("closing a gRPC connection: HTTP/2 error %d: %s", code, message)
        self._out.append(f.goaway_frame(self._last_stream_id, code, message.encode()[:200]))
        self.going_away = True
        self.close()


def _strip_padding(payload: bytes) -> bytes:
    if not payload:
        raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]
