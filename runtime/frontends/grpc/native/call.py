"""One gRPC call on the native server: it receives its HTTP/2 stream's events, runs the servicer
method, and is the `context` that method receives (the grpc.aio ServicerContext methods Trident's
servicers use: abort, write, invocation_metadata, set_code, set_details, ...).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from ..http2.connection import Http2Connection, Stream
from ..http2.header_block import Headers
from .eager import start_eagerly
from .messages import (
    OK_TRAILERS,
    RESPONSE_HEADERS,
    CompressedMessage,
    MessageError,
    MessageReader,
    MessageTooLarge,
    frame_message,
    metadata_value,
    status_headers,
)

if TYPE_CHECKING:
    from .server import NativeGrpcServer

logger = logging.getLogger("trident.frontends.grpc")

#: Headers that are gRPC's or HTTP/2's own, not the caller's metadata.
_RESERVED_HEADERS = frozenset(
    {"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"}
)

#: Messages at most this big are joined with their length prefix into one DATA frame.
_JOIN_LIMIT = 64 * 1024


class RequestQueue:
    """The request messages of a client-streaming call, as the async iterator the servicer
    method reads."""

    __slots__ = ("_call", "_deserializer", "_ended", "_messages", "_waiter")

    def __init__(self, call: ServerCall, deserializer: Callable[[Any], Any] | None) -> None:
        self._call = call
        self._deserializer = deserializer
        self._messages: deque[bytes | memoryview | CompressedMessage] = deque()
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    def push(self, message: bytes | memoryview | CompressedMessage) -> None:
        self._messages.append(message)
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> RequestQueue:
        return self

    async def __anext__(self) -> Any:
        while not self._messages:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
        if isinstance(message, CompressedMessage):
            try:
                message = await asyncio.get_running_loop().run_in_executor(None, message.inflate)
            except MessageError as exc:
                self._call.finish(exc.code, str(exc))
                raise asyncio.CancelledError from None
        if self._deserializer is None:
            return message
        try:
            return self._deserializer(message)
        except Exception as exc:
            self._call.finish(grpc.StatusCode.INTERNAL, f"Exception deserializing request: {exc}")
            raise asyncio.CancelledError from None


class ServerCall:
    """One RPC, from its request headers to its status."""

    def __init__(
        self,
        server: NativeGrpcServer,
        connection: Http2Connection,
        stream: Stream,
        method: grpc.RpcMethodHandler,
        encoding: str,
        headers: Headers,
    ) -> None:
        self._server = server
        self._connection = connection
        self._stream = stream
        self._method = method
        self._headers = headers
        # inflate=False: compressed messages are inflated off the event loop.
        self._reader = MessageReader(encoding, server.limits.max_receive_message_size, False)
        #: A unary call's request message, once complete.
        self._message: bytes | memoryview | CompressedMessage | None = None
        #: What this call counts in the connection's `held_request_bytes`.
        self._held = 0
        self._requests: RequestQueue | None = None
        self._task: asyncio.Task[None] | None = None
        self._deadline: float | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._headers_sent = False
        self.finished = False
        self._code: grpc.StatusCode | None = None
        self._details = ""

    # ------------------------------------------------------------------ stream events

    def start(self, timeout: float | None) -> None:
        """Called once the request headers are in: client-streaming methods start now, the
        others when their one request message is complete."""
        loop = asyncio.get_running_loop()
        if timeout is not None:
            self._deadline = loop.time() + timeout
            self._deadline_timer = loop.call_later(timeout, self._expire)
        if self._method.request_streaming:
            self._requests = RequestQueue(self, self._method.request_deserializer)
            self._task = loop.create_task(self._run(self._requests))
            self._server.calls.add(self)

    def data_received(self, data: bytes) -> None:
        if self.finished:
            return
        reader = self._reader
        try:
            messages = reader.feed(data)  # sizes checked before anything is kept
        except MessageError as exc:
            self._fail(exc)
            return
        if messages:
            if self._requests is not None:
                for message in messages:
                    self._requests.push(message)
            elif self._message is None and len(messages) == 1:
                self._message = messages[0]
            else:
                self.finish(
                    grpc.StatusCode.INTERNAL,
                    "a unary call needs exactly one request message, got 2",
                )
                return
        unary = self._message
        held = reader.held
        if unary is not None:
            held += len(unary.data if isinstance(unary, CompressedMessage) else unary)
        if held != self._held:
            # Count what this call holds against the connection's budget for requests.
            connection = self._connection
            connection.held_request_bytes += held - self._held
            self._held = held
            if connection.held_request_bytes > connection.limits.max_held_request_bytes:
                self._fail(
                    MessageTooLarge(
                        "Received more request data than this connection may hold "
                        f"({connection.limits.max_held_request_bytes} bytes across its calls)"
                    )
                )

    def end_received(self) -> None:
        if self.finished:
            return
        if self._held:  # (inline: every unary call comes here)
            self._connection.held_request_bytes -= self._held
            self._held = 0
        if self._reader.incomplete:
            self.finish(grpc.StatusCode.INTERNAL, "the request stream ended inside a message")
            self._cancel_task()
            return
        if self._requests is not None:
            self._requests.end()
            return
        message, self._message = self._message, None
        if message is None:
            self.finish(
                grpc.StatusCode.INTERNAL, "a unary call needs exactly one request message, got 0"
            )
            return
        if isinstance(message, CompressedMessage):
            self._task = asyncio.get_running_loop().create_task(self._inflate_and_run(message))
        else:
            self._task = start_eagerly(self._run(message))
        if self._task is not None:
            self._server.calls.add(self)

    def _fail(self, error: MessageError) -> None:
        """End the call for a request it cannot read; the connection goes on."""
        self._message = None
        self.finish(error.code, str(error))
        self._cancel_task()

    def _release(self) -> None:
        self._connection.held_request_bytes -= self._held
        self._held = 0

    def reset_received(self) -> None:
        """The client cancelled the call (or went away): stop it, send nothing."""
        self.finished = True
        self._message = None
        if self._held:
            self._release()
        self._stop_deadline()
        if self._requests is not None:
            self._requests.end()
        self._cancel_task()

    # ------------------------------------------------------------------ running the method

    async def _inflate_and_run(self, message: CompressedMessage) -> None:
        try:
            # Up to the size limit of inflating: off the event loop.
            data = await asyncio.get_running_loop().run_in_executor(None, message.inflate)
        except MessageError as exc:
            self._server.calls.discard(self)
            self._fail(exc)
            return
        except asyncio.CancelledError:
            self._server.calls.discard(self)
            self.finish(grpc.StatusCode.CANCELLED, "Cancelled")
            return
        await self._run(data)

    async def _run(self, argument: Any) -> None:
        try:
            await self._invoke(argument)
        except grpc.aio.AbortError:
            self.finish(self._code or grpc.StatusCode.UNKNOWN, self._details)
        except asyncio.CancelledError:
            # The client went away, the deadline passed, or the server is stopping.
            self.finish(grpc.StatusCode.CANCELLED, "Cancelled")
        except NotImplementedError as exc:
            if self._code is None:
                self.finish(grpc.StatusCode.UNIMPLEMENTED, str(exc) or "Method not implemented")
            else:
                self.finish(self._code, self._details)
        except Exception as exc:
            if self._code not in (None, grpc.StatusCode.OK):
                self.finish(self._code, self._details)
            else:
                logger.exception("gRPC method %s failed", self.method_path)
                self.finish(grpc.StatusCode.UNKNOWN, f"Exception calling application: {exc}")
        finally:
            self._server.calls.discard(self)

    async def _invoke(self, argument: Any) -> None:
        method = self._method
        if not method.request_streaming and method.request_deserializer is not None:
            try:
                argument = method.request_deserializer(argument)
            except Exception as exc:
                self.finish(grpc.StatusCode.INTERNAL, f"Exception deserializing request: {exc}")
                return
        behavior = (
            method.unary_unary or method.unary_stream or method.stream_unary or method.stream_stream
        )
        result = behavior(argument, self)
        if method.response_streaming:
            if hasattr(result, "__aiter__"):
                async for response in result:
                    await self.write(response)
            elif inspect.isawaitable(result):
                await result
            self.finish(self._code or grpc.StatusCode.OK, self._details)
            return
        if inspect.isawaitable(result):
            result = await result
        if self._code not in (None, grpc.StatusCode.OK):
            self.finish(self._code, self._details)
        else:
            self._respond(result)

    def _respond(self, response: Any) -> None:
        """Send a unary call's response and its OK status, in one write."""
        if self.finished:
            return
        self.finished = True
        self._stop_deadline()
        self._send_message(response)
        self._connection.send_trailers(self._stream, OK_TRAILERS)
        self._connection.flush_soon()

    def _send_message(self, message: Any) -> None:
        """Queue one response message (after the response headers, the first time)."""
        serializer = self._method.response_serializer
        data = serializer(message) if serializer is not None else message
        connection = self._connection
        if not self._headers_sent:
            self._headers_sent = True
            connection.send_headers(self._stream, RESPONSE_HEADERS)
        prefix, body = frame_message(data)
        if len(body) <= _JOIN_LIMIT:
            connection.send_data(self._stream, prefix + bytes(body))
        else:
            connection.send_data(self._stream, prefix)
            connection.send_data(self._stream, body)

    def finish(self, code: grpc.StatusCode, details: str) -> None:
        """End the call with `code` (once; later calls do nothing)."""
        if self.finished:
            return
        self.finished = True
        if self._held:
            self._release()
        self._stop_deadline()
        connection = self._connection
        if code == grpc.StatusCode.OK and not details:
            block = OK_TRAILERS if self._headers_sent else status_headers(code, "", True)
        else:
            block = status_headers(code, details, trailers_only=not self._headers_sent)
        if self._headers_sent:
            connection.send_trailers(self._stream, block)
        else:
            connection.send_headers(self._stream, block, end_stream=True)
        connection.flush_soon()

    def _expire(self) -> None:
        self._deadline_timer = None
        self.finish(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        self._cancel_task()

    def _stop_deadline(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def _cancel_task(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def cancel(self) -> None:
        """Stop the call from the server side (shutdown)."""
        self._cancel_task()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def method_path(self) -> str:
        return next((value for name, value in self._headers if name == ":path"), "")

    # ------------------------------------------------------------------ the servicer's context

    async def write(self, message: Any) -> None:
        """Send one response message of a server-streaming call."""
        if self.finished:
            raise asyncio.CancelledError
        self._send_message(message)
        connection = self._connection
        connection.flush_soon()
        if connection.write_blocked(self._stream):
            await connection.drained(self._stream)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        self._code = code
        self._details = details
        raise grpc.aio.AbortError()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return tuple(
            (name, metadata_value(name, value))
            for name, value in self._headers
            if not name.startswith(":") and name not in _RESERVED_HEADERS
        )

    def peer(self) -> str:
        return self._connection.peer

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return self.finished and self._task is not None and self._task.cancelled()

    def done(self) -> bool:
        return self.finished
