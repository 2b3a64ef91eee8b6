"""The native gRPC server: listens on a TCP port, routes each call to its servicer method.

Why not grpc.aio: a Python gRPC server built on grpcio spends most of a small request's time in
grpcio's own per-call machinery (completion-queue threads, cross-thread wake-ups, one Python
object and several awaits per call event). A bare grpc.aio echo server stays below real Triton
before doing any work (perf/README.md, "Baselines"). This server
reads and answers a whole call in one `data_received` callback and one task, and writes the
response (HEADERS, DATA and trailers) with one `transport.write`.

It takes servicers through the registration functions grpcio's code generator writes
(`add_XServicer_to_server(servicer, server)`), so the same servicers run on either server;
`--grpc-implementation grpcio` selects grpc.aio instead.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import grpc

from ...restricted_api import RestrictedApis
from ..http2.connection import Http2Connection, Stream
from ..http2.header_block import Headers, encode_headers
from ..http2.limits import Http2Limits
from .call import ServerCall
from .messages import SUPPORTED_ENCODINGS, parse_timeout, status_headers

logger = logging.getLogger("trident.frontends.grpc")


class _CallDetails(NamedTuple):
    """What grpc's generic handlers look a method up by."""

    method: str
    invocation_metadata: Sequence[tuple[str, str]]


class NativeGrpcServer:
    """A gRPC server on the running event loop."""

    def __init__(
        self, restrictions: RestrictedApis | None = None, limits: Http2Limits | None = None
    ) -> None:
        #: --grpc-restricted-protocol; None when nothing is restricted (no check per call).
        self._restrictions = restrictions or None
        #: What each connection and call may cost (docs/grpc.md, "Limits").
        self.limits = limits or Http2Limits()
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        self._generic_handlers: list[grpc.GenericRpcHandler] = []
        self._server: asyncio.Server | None = None
        self._connections: set[Http2Connection] = set()
        #: Calls whose servicer method is running.
        self.calls: set[ServerCall] = set()

    # ------------------------------------------------------------------ registration
    # The two methods grpcio's generated add_XServicer_to_server functions call.

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in handlers.items():
            self._methods[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic_handlers.extend(handlers)

    def _lookup(self, path: str) -> grpc.RpcMethodHandler | None:
        handler = self._methods.get(path)
        if handler is None:
            details = _CallDetails(path, ())
            for generic in self._generic_handlers:
                handler = generic.service(details)  # type: ignore[arg-type]
                if handler is not None:
                    break
        return handler

    # ------------------------------------------------------------------ serving

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen on host:port (0 picks a free port), over TLS when `ssl_context` is given
        (it must offer ALPN h2); returns the port bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection,
            host=host.strip("[]") or None,
            port=port,
            backlog=1024,
            ssl=ssl_context,
        )
        return int(self._server.sockets[0].getsockname()[1])

    def _new_connection(self) -> Http2Connection:
        connection = Http2Connection(self._open_stream, self._connections.discard, self.limits)
        self._connections.add(connection)
        return connection

    def _open_stream(
        self, connection: Http2Connection, stream: Stream, headers: Headers
    ) -> ServerCall | _Rejected:
        path = ""
        content_type = ""
        encoding = "identity"
        timeout = ""
        for name, value in headers:
            if name == ":path":
                path = value
            elif name == "content-type":
                content_type = value
            elif name == "grpc-encoding":
                encoding = value
            elif name == "grpc-timeout":
                timeout = value
        if not content_type.startswith("application/grpc"):
            connection.send_headers(stream, encode_headers([(b":status", b"415")]), True)
            return _REJECTED
        method = self._lookup(path)
        if method is None:
            return _reject(connection, stream, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if self._restrictions is not None:
            refusal = self._restrictions.grpc_refusal(path, headers)
            if refusal is not None:
                return _reject(connection, stream, grpc.StatusCode.UNAVAILABLE, refusal)
        if encoding not in SUPPORTED_ENCODINGS:
            return _reject(
                connection,
                stream,
                grpc.StatusCode.UNIMPLEMENTED,
                f"grpc-encoding {encoding!r} is not supported (use gzip or deflate)",
            )
        try:
            seconds = parse_timeout(timeout) if timeout else None
        except ValueError:  # grpc-core's answer (it logs "invalid value" too)
            return _reject(
                connection,
                stream,
                grpc.StatusCode.INTERNAL,
                "Error parsing 'grpc-timeout' metadata",
            )
        call = ServerCall(self, connection, stream, method, encoding, headers)
        call.start(seconds)
        return call

    async def stop(self, grace: float) -> None:
        """Stop listening, let calls in flight finish for up to `grace` seconds, cancel what
        still runs, and close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.go_away()
        tasks = [call.task for call in self.calls if call.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for call in list(self.calls):
                call.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for connection in list(self._connections):
            connection.close()
        await asyncio.sleep(0)  # let the transports close


class _Rejected:
    """The handler of a stream answered at once: it ignores whatever else the client sends."""

    def data_received(self, data: bytes) -> None:
        pass

    def end_received(self) -> None:
        pass

    def reset_received(self) -> None:
        pass


_REJECTED = _Rejected()


def _reject(
    connection: Http2Connection, stream: Stream, code: grpc.StatusCode, details: str
) -> _Rejected:
    connection.send_headers(stream, status_headers(code, details, trailers_only=True), True)
    return _REJECTED
