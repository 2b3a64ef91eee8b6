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

Limits (`Http2Limits`, one object for the whole server): concurrent streams, header block size
(counted across CONTINUATION frames), a reset rate, a cap on control replies owed to a client
that does not read, and backpressure: while the transport's buffer is full or this connection's
unsent response bytes pass `max_write_buffer_size`, the connection stops reading (frames already
read wait in its buffer), so a client that does not read cannot make the server buffer without
bound. SETTINGS frames cost O(1): a change of the initial window is settled on each stream when
that stream is next used. Anything unexpected while reading closes the connection with GOAWAY.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import frames as f
from .header_block import HeaderDecoder, Headers
from .limits import Http2Limits, ResetBudget
from .sending import FrameSender
from .stream import PartialHeaders, Stream, StreamHandler, strip_padding

__all__ = ["Http2Connection", "Stream", "StreamHandler", "StreamOpener"]

logger = logging.getLogger("trident.frontends.grpc")

#: What the server advertises.
RECEIVE_WINDOW = 16 * 1024 * 1024  # per stream
CONNECTION_RECEIVE_WINDOW = 64 * 1024 * 1024
MAX_RECEIVE_FRAME = 1024 * 1024


#: Called with (connection, stream, request headers) for each new stream.
StreamOpener = Callable[["Http2Connection", "Stream", Headers], StreamHandler]


class Http2Connection(FrameSender, asyncio.Protocol):
    """The server side of one HTTP/2 connection."""

    def __init__(
        self,
        open_stream: StreamOpener,
        on_close: Callable[[Http2Connection], None],
        limits: Http2Limits | None = None,
    ):
        super().__init__()
        self._open_stream = open_stream
        self._on_close = on_close
        self.limits = limits = limits or Http2Limits()
        self._max_unsent = limits.max_write_buffer_size
        self._max_streams = limits.max_concurrent_streams
        self._max_header_block = limits.max_header_list_size
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._needed = len(f.PREFACE)  # bytes the next step needs before it can parse
        self._preface_seen = False
        self._flush_scheduled = False
        self._decoder = HeaderDecoder(limits.max_header_list_size)
        self.streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        #: A header block still waiting for CONTINUATION frames.
        self._partial_headers: PartialHeaders | None = None
        #: Set when the peer's initial window grew: waiting streams may send again.
        self._retry_waiting = False
        self._received = 0  # connection-level bytes since the last WINDOW_UPDATE
        self._write_paused = False
        self._resumed: asyncio.Future[None] | None = None
        #: Reading is paused for backpressure; `_held` when frames already read wait in
        #: `_buffer` for the client to catch up.
        self._reading_paused = False
        self._held = False
        self._resets = ResetBudget(
            limits.max_resets_per_second, limits.reset_burst_seconds, time.monotonic()
        )
        #: Control replies queued since the transport's buffer was last seen empty.
        self._owed = 0
        #: Request bytes the stream handlers hold (kept by them, against
        #: `limits.max_held_request_bytes`).
        self.held_request_bytes = 0
        self._failed = False
        self.going_away = False
        self.closed = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        # pause_writing (and so pause_reading) once this much waits in the transport.
        transport.set_write_buffer_limits(high=self._max_unsent)  # type: ignore[attr-defined]
        self._out.append(
            f.settings_frame(
                {
                    f.SETTINGS_ENABLE_PUSH: 0,
                    f.SETTINGS_MAX_CONCURRENT_STREAMS: self.limits.max_concurrent_streams,
                    f.SETTINGS_INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                    f.SETTINGS_MAX_FRAME_SIZE: MAX_RECEIVE_FRAME,
                    f.SETTINGS_MAX_HEADER_LIST_SIZE: self.limits.max_header_list_size,
                }
            )
        )
        self._out.append(
            f.window_update_frame(0, CONNECTION_RECEIVE_WINDOW - f.DEFAULT_WINDOW_SIZE)
        )
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return
        if self._buffer or len(data) < self._needed:
            self._buffer += data
            if len(self._buffer) < self._needed:
                return
            data = bytes(self._buffer)
            self._buffer.clear()
            self._held = False  # what was held is in `data`
        self._process(data)

    def _process(self, data: bytes) -> None:
        """Handle the frames in `data`, write the answers, and apply backpressure."""
        try:
            if not self._preface_seen:
                if data[: len(f.PREFACE)] != f.PREFACE:
                    raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "not an HTTP/2 client preface")
                self._preface_seen = True
                data = data[len(f.PREFACE) :]
            self._parse(data)
            if self._retry_waiting:
                self._retry_waiting = False
                for stream in list(self._waiting.values()):
                    self._send_pending(stream)
        except f.Http2ProtocolError as exc:
            self._fail(exc.code, str(exc))
        except Exception:
            # A bug, not the client's doing: end this connection once, cleanly, and say why.
            logger.exception("closing a gRPC connection after an unexpected error")
            self._fail(f.INTERNAL_ERROR, "internal error", log=False)
        self.flush()
        if self._held and not self._failed:
            self._pause_reading()
            if not self._write_paused:
                # The transport took everything: go on with the frames held, after the other
                # connections had their turn. (Paused, resume_writing goes on instead.)
                asyncio.get_running_loop().call_soon(self._resume_parsing)

    def _resume_parsing(self) -> None:
        if self._failed or self.closed or self._write_paused:
            return
        if self._held:
            self._held = False
            data = bytes(self._buffer)
            self._buffer.clear()
            self._needed = f.FRAME_HEADER_SIZE
            self._process(data)
        if not self._held and self._reading_paused and not self._write_paused:
            self._reading_paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            if not self._transport.is_closing():
                self._transport.pause_reading()

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
        """The transport's buffer passed `max_write_buffer_size`: read nothing more from this
        client until it has taken its responses."""
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._owed = 0  # the client has read what it was sent
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None
        if self._reading_paused:
            asyncio.get_running_loop().call_soon(self._resume_parsing)

    @property
    def unsent_bytes(self) -> int:
        """Response bytes this connection holds: queued, in the transport's buffer, or waiting
        for the client's flow-control windows."""
        transport = self._transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return self._queued + buffered + self.pending_bytes

    # ------------------------------------------------------------------ reading frames

    def _parse(self, data: bytes) -> None:
        pos = 0
        end = len(data)
        max_frame = MAX_RECEIVE_FRAME
        max_unsent = self._max_unsent
        while end - pos >= f.FRAME_HEADER_SIZE:
            if self._queued > max_unsent or self._write_paused:
                # Answers pile up faster than they leave: keep the rest for later.
                self._buffer += data[pos:]
                self._held = True
                self._needed = 0
                return
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
                    self._owe(f.frame(f.PING, f.FLAG_ACK, 0, payload))
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
            payload = strip_padding(payload)
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
            payload = strip_padding(payload)
        if flags & f.FLAG_PRIORITY:
            payload = payload[5:]
        if len(payload) > self._max_header_block:
            self._header_block_too_large()
        if not flags & f.FLAG_END_HEADERS:
            self._partial_headers = PartialHeaders(stream_id, flags, [payload], len(payload))
            return
        self._on_header_block(stream_id, flags, payload)

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        partial = self._partial_headers
        if partial is None or partial.stream_id != stream_id:
            raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "unexpected CONTINUATION frame")
        partial.size += len(payload)
        if partial.size > self._max_header_block:  # before keeping the fragment
            self._header_block_too_large()
        partial.fragments.append(payload)
        if flags & f.FLAG_END_HEADERS:
            self._partial_headers = None
            self._on_header_block(stream_id, partial.flags, b"".join(partial.fragments))

    def _header_block_too_large(self) -> None:
        raise f.Http2ProtocolError(
            f.ENHANCE_YOUR_CALM, f"header block larger than {self._max_header_block} bytes"
        )

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
        if (
            self.going_away
            or len(self.streams) >= self._max_streams
            or self.pending_bytes > self._max_unsent  # the client is not taking its answers
        ):
            self._owe(f.rst_stream_frame(stream_id, f.REFUSED_STREAM))
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
        if not self._resets.take(time.monotonic()):
            raise f.Http2ProtocolError(f.ENHANCE_YOUR_CALM, "too many stream resets")
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        stream.remote_closed = stream.local_closed = True
        self._drop_pending(stream)
        if stream.handler is not None:
            stream.handler.reset_received()

    def _on_settings(self, flags: int, payload: bytes) -> None:
        if flags & f.FLAG_ACK:
            return
        for key, value in f.parse_settings(payload):
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW_SIZE:
                    raise f.Http2ProtocolError(f.FLOW_CONTROL_ERROR, "initial window too large")
                if value > self._peer_initial_window:
                    self._retry_waiting = bool(self._waiting)
                # Each stream settles the change when next used (`_settle`).
                self._peer_initial_window = value
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE_LIMIT:
                    raise f.Http2ProtocolError(f.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
        self._owe(f.frame(f.SETTINGS, f.FLAG_ACK, 0))

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.Http2ProtocolError(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = f.read_u32(payload) & 0x7FFFFFFF
        if stream_id == 0:
            self._send_window += increment
            if self._send_window > f.MAX_WINDOW_SIZE:
                raise f.Http2ProtocolError(f.FLOW_CONTROL_ERROR, "connection window overflow")
            for blocked in list(self._blocked.values()):
                if self._send_window <= 0:
                    break
                self._send_pending(blocked)
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._settle(stream)
            stream.send_window += increment
            if stream.send_window > f.MAX_WINDOW_SIZE:
                self.reset_stream(stream, f.FLOW_CONTROL_ERROR)  # a stream error (section 6.9.1)
                if stream.handler is not None:
                    stream.handler.reset_received()
            elif stream.pending:
                self._send_pending(stream)

    # ------------------------------------------------------ writing frames (the rest: sending.py)

    @property
    def peer(self) -> str:
        """The client's address, as grpc writes it ("ipv4:127.0.0.1:5555")."""
        address = self._transport.get_extra_info("peername") if self._transport else None
        if not address:
            return ""
        family = "ipv6" if ":" in str(address[0]) else "ipv4"
        return f"{family}:{address[0]}:{address[1]}"

    def flush(self) -> None:
        """Write everything queued in one go."""
        self._flush_scheduled = False
        if not self._out or self._transport is None:
            return
        out, self._out = self._out, []
        self._queued = 0
        if not self.closed:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
            if self._owed and not self._transport.get_write_buffer_size():
                self._owed = 0  # the client takes what it is sent

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

    def _owe(self, reply: bytes) -> None:
        """Queue a control reply (PING or SETTINGS acknowledgement, stream refusal). A client
        that keeps asking for them without reading is cut off, not buffered for."""
        self._out.append(reply)
        self._owed += 1
        if self._owed >= self.limits.max_pending_control_frames:
            self.flush()
            if self._owed:  # flush saw the transport's buffer still holding data
                raise f.Http2ProtocolError(
                    f.ENHANCE_YOUR_CALM,
                    f"{self._owed} control frames owed to a client that does not read them",
                )

    def _fail(self, code: int, message: str, log: bool = True) -> None:
        if self._failed:
            return
        self._failed = True
        if log:
            logger.warning("closing a gRPC connection: HTTP/2 error %d: %s", code, message)
        self._partial_headers = None
        self._buffer.clear()
        self._held = False
        self._out.append(f.goaway_frame(self._last_stream_id, code, message.encode()[:200]))
        self.going_away = True
        self.close()
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size():
            # The client is not reading: a graceful close would wait on it forever.
            transport.abort()
