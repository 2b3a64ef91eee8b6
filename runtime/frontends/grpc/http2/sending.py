"""The sending side of an HTTP/2 connection: HEADERS, DATA and trailers queued for the next
flush, and the flow control that holds DATA until the client's windows open (RFC 9113 section
6.9). `Http2Connection` (connection.py) reads frames and owns the transport; this is its base.

A stream's data that does not fit the windows waits in `stream.pending` (counted in
`pending_bytes`, which the connection's backpressure watches); a change of the client's initial
window is settled on each stream when that stream is next used, so a SETTINGS frame costs O(1).
"""

from __future__ import annotations

import asyncio

from . import frames as f
from .stream import Stream


class FrameSender:
    """Outgoing frames and send-side flow control (the base of Http2Connection)."""

    # The connection's own state, read here.
    streams: dict[int, Stream]
    closed: bool
    going_away: bool
    _write_paused: bool
    _resumed: asyncio.Future[None] | None

    def __init__(self) -> None:
        self._out: list[bytes | memoryview] = []
        #: DATA bytes in `_out` (what the next flush hands the transport).
        self._queued = 0
        # Peer settings.
        self._peer_initial_window = f.DEFAULT_WINDOW_SIZE
        self._peer_max_frame = f.DEFAULT_MAX_FRAME_SIZE
        self._send_window = f.DEFAULT_WINDOW_SIZE
        #: Streams with data waiting for the connection's send window, in arrival order.
        self._blocked: dict[int, Stream] = {}
        #: Streams with data waiting for any window, and the bytes they hold.
        self._waiting: dict[int, Stream] = {}
        self.pending_bytes = 0

    def close(self) -> None:
        raise NotImplementedError

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
        size = len(data)
        if stream.pending:
            stream.pending.append(memoryview(data))
            self.pending_bytes += size
            return
        if stream.initial_window != self._peer_initial_window:
            self._settle(stream)
        if size <= min(self._send_window, stream.send_window, self._peer_max_frame):
            self._send_window -= size
            stream.send_window -= size
            self._queued += size
            self._out.append(f.frame_header(size, f.DATA, 0, stream.stream_id))
            self._out.append(data)
            return
        stream.pending.append(memoryview(data))
        self.pending_bytes += size
        self._waiting[stream.stream_id] = stream
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
        stream.local_closed = stream.remote_closed = True
        self._out.append(f.rst_stream_frame(stream.stream_id, code))
        self._drop_pending(stream)

    def write_blocked(self, stream: Stream) -> bool:
        """Whether a writer should wait (`drained`) before sending more on `stream`."""
        return bool(stream.pending) or self._write_paused

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

    def _settle(self, stream: Stream) -> None:
        """Apply the changes of SETTINGS_INITIAL_WINDOW_SIZE since the stream was last used."""
        stream.send_window += self._peer_initial_window - stream.initial_window
        stream.initial_window = self._peer_initial_window

    def _send_pending(self, stream: Stream) -> None:
        pending = stream.pending
        if stream.initial_window != self._peer_initial_window:
            self._settle(stream)
        while pending:
            allowed = min(self._send_window, stream.send_window, self._peer_max_frame)
            if allowed <= 0:
                if self._send_window <= 0:
                    self._blocked[stream.stream_id] = stream
                else:  # waits for its own window: a connection WINDOW_UPDATE cannot help
                    self._blocked.pop(stream.stream_id, None)
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
            self.pending_bytes -= size
            self._queued += size
            self._out.append(f.frame_header(size, f.DATA, 0, stream.stream_id))
            self._out.append(chunk)
        self._blocked.pop(stream.stream_id, None)
        self._waiting.pop(stream.stream_id, None)
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
            if stream.pending:  # (a stream without pending data is neither blocked nor waiting)
                self._drop_pending(stream)
            elif stream.drained is not None:
                self._wake_drained(stream)
            if self.going_away and not self.streams:
                self.close()

    def _drop_pending(self, stream: Stream) -> None:
        """Forget what a finished stream still had to send."""
        self._blocked.pop(stream.stream_id, None)
        if self._waiting.pop(stream.stream_id, None) is not None or stream.pending:
            self.pending_bytes -= sum(len(chunk) for chunk in stream.pending)
            stream.pending.clear()
        stream.trailers = None
        self._wake_drained(stream)

    @staticmethod
    def _wake_drained(stream: Stream) -> None:
        if stream.drained is not None and not stream.drained.done():
            stream.drained.set_result(None)
        stream.drained = None
