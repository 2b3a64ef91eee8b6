"""A fast path for the one hot HTTP route, `POST /v2/models/{model}[/versions/{v}]/infer`.

Why: aiohttp costs a small inference more than the model and the data plane together (a request
object, a response object, a task wake-up per request; measured in perf/README.md, "HTTP"). For
the hot route this protocol parses the request with httptools (llhttp, the parser Node.js uses),
starts the data plane call inside `data_received` (a model that runs inline answers before the
callback returns, with no task and no loop turn) and writes the response with one
`transport.write`.

Everything else goes to aiohttp unchanged: the first request on a connection that the fast path
does not take (another route, SSE, a compressed or chunked body, `Expect: 100-continue`, a parse
error...) hands the connection, with the bytes of that request and all that follows, to aiohttp's
own protocol for the rest of its life. So every other route, limit and error body stays aiohttp's,
and the fast path answers only what it fully understands.

Limits: the request line and headers together are capped (`MAX_HEAD_BYTES`; past it the
connection goes to aiohttp, which answers 431/400), the body by the frontend's
`--http-max-input-size` from Content-Length before any of it is buffered.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

from trident.runtime.errors import TridentError

logger = logging.getLogger("trident.http")

#: Request line and headers larger than this go to aiohttp (its own limit is 8 KiB per line).
MAX_HEAD_BYTES = 16 * 1024
#: Requests a client may send ahead of the answers before the server stops reading.
MAX_PIPELINED = 16
_INFER_PATH = re.compile(rb"/v2/models/([^/?#]+)(?:/versions/([0-9]+))?/infer")
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error"}


@dataclass(slots=True)
class FastInferReply:
    """What the infer route answers: status, extra headers and the body."""

    status: int
    content_type: bytes
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


#: (model, version, body, Inference-Header-Content-Length or None, Accept-Encoding or None)
InferCall = Callable[[str, str, bytes, str | None, str | None], Awaitable[FastInferReply]]
ErrorReply = Callable[[TridentError], FastInferReply]


@dataclass(slots=True)
class _Message:
    """One request being parsed."""

    start: int
    url: bytes = b""
    fast: bool = True
    content_length: int = -1
    header_length: str | None = None
    accept_encoding: str | None = None
    headers_done: bool = False
    body_start: int = 0
    keep_alive: bool = True


class FastInferProtocol(asyncio.Protocol):
    """One HTTP connection: infer requests here, everything else handed to aiohttp."""

    def __init__(
        self,
        fallback: Callable[[], asyncio.Protocol],
        infer: InferCall,
        error_reply: ErrorReply,
        max_body: int,
        connections: set[FastInferProtocol],
    ) -> None:
        self._fallback = fallback
        self._infer = infer
        self._error_reply = error_reply
        self._max_body = max_body
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        #: Bytes received since the first message not yet answered began.
        self._raw = bytearray()
        self._message: _Message | None = None
        self._next_start = 0
        #: Fast requests parsed but not answered, in order; the first may be running.
        self._queue: list[_Message] = []
        self._running: asyncio.Task[None] | None = None
        self._handover_at = -1
        self._closing = False
        self._paused = False
        self._handed_to: asyncio.Protocol | None = None

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handed_to is not None:
            self._handed_to.connection_lost(exc)
            return
        self._connections.discard(self)
        self._closing = True
        if self._running is not None:
            self._running.cancel()

    def data_received(self, data: bytes) -> None:
        if self._handed_to is not None:  # a read that raced the handover
            self._handed_to.data_received(data)
            return
        if self._handover_at >= 0:  # waiting for answers before the handover: keep the bytes
            self._raw += data
            return
        start = len(self._raw)
        self._raw += data
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._begin_handover(self._message.start if self._message else start)
        message = self._message
        if (
            message is not None
            and not message.headers_done
            and len(self._raw) - message.start > MAX_HEAD_BYTES
        ):
            self._begin_handover(message.start)  # aiohttp answers an oversized head
        self._answer_queue()

    def close(self) -> None:
        """Close at shutdown (the frontend stops)."""
        if self._transport is not None:
            self._transport.close()

    # ---------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        self._message = _Message(start=self._next_start)

    def on_url(self, url: bytes) -> None:
        message = self._message
        if message is not None:
            message.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self._message
        if message is None or not message.fast:
            return
        lowered = name.lower()
        if lowered == b"content-length":
            message.content_length = int(value) if value.isdigit() else -1
            if message.content_length < 0:
                message.fast = False
        elif lowered == b"inference-header-content-length":
            message.header_length = value.decode("latin-1")
        elif lowered == b"accept-encoding":
            message.accept_encoding = value.decode("latin-1")
        elif lowered == b"accept":
            if b"text/event-stream" in value:
                message.fast = False
        elif lowered in (b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"):
            message.fast = False

    def on_headers_complete(self) -> None:
        message = self._message
        if message is None:
            return
        message.headers_done = True
        head_end = self._raw.find(b"\r\n\r\n", message.start)
        if (
            not message.fast
            or head_end < 0
            or head_end - message.start > MAX_HEAD_BYTES
            or self._parser.get_method() != b"POST"
            or message.content_length < 0
            or message.content_length > self._max_body
            or _INFER_PATH.fullmatch(message.url) is None
        ):
            message.fast = False
            self._begin_handover(message.start)
            return
        message.body_start = head_end + 4
        self._next_start = message.body_start + message.content_length
        message.keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        message, self._message = self._message, None
        if message is not None and message.fast and self._handover_at < 0:
            self._queue.append(message)

    # ---------------------------------------------------------------- answering

    def _answer_queue(self) -> None:
        """Answer queued requests in order; one waiting on its model holds the rest."""
        while self._queue and self._running is None and not self._closing:
            message = self._queue[0]
            coroutine = self._answer(message)
            try:
                awaited = coroutine.send(None)
            except StopIteration:
                self._queue.pop(0)
                continue
            self._running = asyncio.get_running_loop().create_task(_resume(coroutine, awaited))
            self._running.add_done_callback(self._answered)
            if len(self._queue) > MAX_PIPELINED and self._transport is not None:
                # A client pipelining past the bound waits; reading goes on otherwise, so a
                # client that hangs up is seen (and its request cancelled) at once.
                self._transport.pause_reading()
                self._paused = True
            return
        if not self._queue and self._running is None:
            self._finish_handover()

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._running = None
        if self._queue:
            self._queue.pop(0)
        if self._closing:
            return
        if self._paused and self._transport is not None and self._handover_at < 0:
            self._paused = False
            self._transport.resume_reading()
        self._answer_queue()

    async def _answer(self, message: _Message) -> None:
        match = _INFER_PATH.fullmatch(message.url)
        assert match is not None
        model = match[1].decode("latin-1")
        if "%" in model:
            from urllib.parse import unquote

            model = unquote(model)
        version = (match[2] or b"").decode("latin-1")
        body = bytes(self._raw[message.body_start : message.body_start + message.content_length])
        try:
            reply = await self._infer(
                model, version, body, message.header_length, message.accept_encoding
            )
        except TridentError as exc:
            reply = self._error_reply(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug costs one request a 500, never the connection
            logger.exception("HTTP POST %s failed", message.url.decode("latin-1", "replace"))
            reply = FastInferReply(
                500,
                b"application/json",
                b'{"error":"internal error: ' + type(exc).__name__.encode() + b'"}',
            )
        self._write(reply, message.keep_alive)

    def _write(self, reply: FastInferReply, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        reason = _REASONS.get(reply.status, b"Error")
        head = [
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (reply.status, reason, reply.content_type, len(reply.body))
        ]
        for name, value in reply.headers:
            head.append(b"%s: %s\r\n" % (name, value))
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        head.append(reply.body)
        transport.write(b"".join(head))
        if not keep_alive:
            transport.close()

    # ---------------------------------------------------------------- handing over to aiohttp

    def _begin_handover(self, at: int) -> None:
        if self._handover_at < 0:
            self._handover_at = at

    def _finish_handover(self) -> None:
        """Once every fast request before it is answered, give aiohttp the connection."""
        if self._handover_at < 0:
            if self._message is None and self._next_start and self._next_start <= len(self._raw):
                del self._raw[: self._next_start]  # everything before is answered
                self._next_start = 0
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        pending = bytes(self._raw[self._handover_at :])
        self._raw.clear()
        self._connections.discard(self)
        protocol = self._fallback()
        self._handed_to = protocol
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        transport.resume_reading()
        if pending:
            protocol.data_received(pending)


async def _resume(coroutine: Any, awaited: Any) -> None:
    """Drive a coroutine already started by `send(None)`, as a task would."""
    while True:
        error: BaseException | None = None
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                await awaited
        except BaseException as exc:
            error = exc
        try:
            awaited = coroutine.send(None) if error is None else coroutine.throw(error)
        except StopIteration:
            return
