"""The gRPC frontend: inference.GRPCInferenceService and grpc.health.v1.Health on the server's
event loop, served by Trident's native gRPC server (native/, the default) or by grpc.aio
(`--grpc-implementation grpcio`).

Both run the handlers as coroutines on the same loop as the data plane, so a request goes from
the socket to the scheduler without a thread hop. (A `grpc.server` with a thread pool has to hand
every request to the loop and back, which costs more server CPU per request and serves fewer
requests per second: perf/README.md, "Baselines".)
The native server does much less per call than grpc.aio: see native/server.py.
"""

from __future__ import annotations

import logging

import grpc

from trident.runtime.core.data_plane import DataPlane
from trident.runtime.errors import UnavailableError
from trident.runtime.protocol import grpc_service_pb2_grpc, health_pb2_grpc
from trident.runtime.settings import ServerSettings

from ..restricted_api import RestrictedApis
from ..tls import TlsConfig
from .http2.limits import Http2Limits
from .native.server import NativeGrpcServer
from .restriction import RestrictedApiInterceptor
from .servicer import HealthServicer, InferenceServicer
from .wire import read_infer_request

_SERVICE = "inference.GRPCInferenceService"

logger = logging.getLogger("trident.frontends.grpc")

#: Channel options for the server (`grpcio_options` adds the limits of the settings).
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    # Responses of any size (Triton sets no limit); requests are bounded by the settings.
    ("grpc.max_send_message_length", -1),
    # grpc enables SO_REUSEPORT by default, which lets a second server bind a port that is in
    # use and silently share it. Fail instead, as tritonserver does.
    ("grpc.so_reuseport", 0),
)


def grpcio_options(settings: ServerSettings) -> tuple[tuple[str, int], ...]:
    """grpc.aio's options: SERVER_OPTIONS and the --grpc-max-* limits grpcio can apply."""
    return (
        *SERVER_OPTIONS,
        ("grpc.max_receive_message_length", settings.grpc_max_receive_message_size),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.max_metadata_size", settings.grpc_max_header_list_size),
    )


def _bind_address(address: str, port: int) -> str:
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"  # IPv6 literal
    return f"{address}:{port}"


class GrpcFrontend:
    """Binds settings.grpc_address:settings.grpc_port (0 picks a free port)."""

    def __init__(self, dataplane: DataPlane, settings: ServerSettings) -> None:
        self._dataplane = dataplane
        self._settings = settings
        self._server: grpc.aio.Server | NativeGrpcServer | None = None
        self._servicer: InferenceServicer | None = None
        self.port = 0

    async def start(self) -> int:
        """Start serving; returns the port bound."""
        servicer = InferenceServicer(self._dataplane)
        # TLS files and restricted groups, resolved once: an unrestricted server checks nothing
        # per call.
        tls = TlsConfig.for_grpc(self._settings)
        restrictions = RestrictedApis.for_grpc(self._settings.grpc_restricted_protocol)
        server: grpc.aio.Server | NativeGrpcServer
        if self._settings.grpc_implementation == "native":
            server = NativeGrpcServer(restrictions, Http2Limits.from_settings(self._settings))
        else:
            interceptors = [RestrictedApiInterceptor(restrictions)] if restrictions else None
            server = grpc.aio.server(
                options=grpcio_options(self._settings), interceptors=interceptors
            )
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        # The two inference RPCs take and give bytes framed by wire.py (no protobuf copies of
        # tensor data); registered handlers take precedence over the generated ones.
        server.add_registered_method_handlers(
            _SERVICE,
            {
                "ModelInfer": grpc.unary_unary_rpc_method_handler(
                    servicer.ModelInfer, request_deserializer=read_infer_request
                ),
                "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                    servicer.ModelStreamInfer, request_deserializer=read_infer_request
                ),
            },
        )
        health_pb2_grpc.add_HealthServicer_to_server(
            HealthServicer(self._dataplane.queries), server
        )
        address = _bind_address(self._settings.grpc_address, self._settings.grpc_port)
        if isinstance(server, NativeGrpcServer):
            try:
                port = await server.start(
                    self._settings.grpc_address,
                    self._settings.grpc_port,
                    tls.ssl_context(alpn=("h2",)) if tls else None,
                )
            except OSError as exc:
                raise UnavailableError(
                    f"unable to bind the gRPC server to {address}: {exc.strerror or exc}"
                ) from None
        else:
            try:
                if tls is None:
                    port = server.add_insecure_port(address)
                else:
                    port = server.add_secure_port(address, tls.grpc_credentials())
            except RuntimeError as exc:
                raise UnavailableError(
                    f"unable to bind the gRPC server to {address}: {exc}"
                ) from None
            if port == 0:
                raise UnavailableError(f"unable to bind the gRPC server to {address}")
            await server.start()
        self._server = server
        self._servicer = servicer
        self.port = port
        logger.info(
            "gRPC server listening on %s%s",
            _bind_address(self._settings.grpc_address, port),
            "" if tls is None else " (mutual TLS)" if tls.mutual else " (TLS)",
        )
        return port

    async def stop(self) -> None:
        """Stop accepting calls and let in-flight ones finish (up to most of exit_timeout_secs),
        then cancel what still runs."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._servicer is not None:
            self._servicer.begin_shutdown()  # idle streams would otherwise hold the grace period
        # Leave a margin inside exit_timeout_secs (the server's own limit for this call): grpc
        # must get to cancel what still runs, or a client could wait on its stream forever.
        await server.stop(grace=self._settings.exit_timeout_secs * 0.8)
