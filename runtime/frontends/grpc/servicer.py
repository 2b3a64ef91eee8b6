"""The RPC methods of inference.GRPCInferenceService and grpc.health.v1.Health.

Each method only translates: protobuf in, one call to a part of the DataPlane (inference, queries
or admin), protobuf out. Inference goes through codec.py (messages <-> InferenceRequest /
InferenceResponse) and wire.py (tensor bytes framed without protobuf copies); streams are run by
stream.py; the other answers are rendered by render.py. TridentError becomes the gRPC status it
names (status.py); nothing here knows about models.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from trident.runtime.core.data_plane import DataPlane
from trident.runtime.core.model_queries import ModelQueries
from trident.runtime.errors import InvalidArgumentError, TridentError
from trident.runtime.observability.tracing import begin_trace, send_traced
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.protocol import grpc_service_pb2_grpc as gs_grpc
from trident.runtime.protocol import health_pb2, health_pb2_grpc
from trident.runtime.types import InferenceRequest

from . import render
from .codec import decode_infer_request
from .status import abort, unexpected
from .stream import InferStream
from .wire import InferRequestFrame, write_infer_response

#: Stream metadata that asks for Triton's "close the stream on the first error" mode.
GRPC_ERROR_MODE_HEADER = "triton_grpc_error"

_Response = TypeVar("_Response")


def _translate_errors(
    method: Callable[..., Awaitable[_Response]],
) -> Callable[..., Awaitable[_Response]]:
    """Report TridentError with its own status code, and any other exception as INTERNAL
    (logged with its traceback), instead of grpc's bare UNKNOWN."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> _Response:
        try:
            return await method(self, request, context)
        except TridentError as exc:
            error = exc
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            error = unexpected(method.__name__, exc)
        await abort(context, error)

    return wrapper


class InferenceServicer(gs_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the core's three services."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._inference = dataplane.inference
        self._queries = dataplane.queries
        self._admin = dataplane.admin
        #: Samples requests for the trace file (observability/tracing.py).
        self._tracer = dataplane.tracer
        self._streams: set[InferStream] = set()

    # ------------------------------------------------------------------ health and metadata

    @_translate_errors
    async def ServerLive(self, request: gs.ServerLiveRequest, context: Any) -> Any:
        return gs.ServerLiveResponse(live=self._queries.live())

    @_translate_errors
    async def ServerReady(self, request: gs.ServerReadyRequest, context: Any) -> Any:
        return gs.ServerReadyResponse(ready=self._queries.ready())

    @_translate_errors
    async def ModelReady(self, request: gs.ModelReadyRequest, context: Any) -> Any:
        return gs.ModelReadyResponse(ready=self._queries.model_ready(request.name, request.version))

    @_translate_errors
    async def ServerMetadata(self, request: gs.ServerMetadataRequest, context: Any) -> Any:
        return render.server_metadata(self._queries.server_metadata())

    @_translate_errors
    async def ModelMetadata(self, request: gs.ModelMetadataRequest, context: Any) -> Any:
        return render.model_metadata(self._queries.model_metadata(request.name, request.version))

    @_translate_errors
    async def ModelConfig(self, request: gs.ModelConfigRequest, context: Any) -> Any:
        return gs.ModelConfigResponse(
            config=self._queries.model_config(request.name, request.version)
        )

    @_translate_errors
    async def ModelStatistics(self, request: gs.ModelStatisticsRequest, context: Any) -> Any:
        statistics = self._queries.model_statistics(request.name, request.version)
        return render.model_statistics(statistics)

    # ------------------------------------------------------------------ inference

    async def ModelInfer(
        self, request: InferRequestFrame, context: grpc.aio.ServicerContext
    ) -> bytes:
        """`request` is (message, raw input buffers) and the reply is the serialized
        ModelInferResponse: wire.py frames both (see GrpcFrontend). The hot path: no decorator,
        no logging, one try block."""
        infer_request: InferenceRequest | None = None
        try:
            traced_from = time.monotonic_ns() if self._tracer.enabled else 0
            infer_request = decode_infer_request(*request)
            if traced_from:
                infer_request.trace = begin_trace(
                    self._tracer, infer_request.model_name, "GRPC_WAITREAD", traced_from
                )
            response = await self._inference.infer(infer_request)
            if infer_request.trace is None:
                return write_infer_response(response)
            return send_traced(infer_request.trace, "GRPC", write_infer_response, response)
        except TridentError as exc:
            error = exc
        except asyncio.CancelledError:
            # grpc.aio cancels the handler when the client cancels or its deadline passes.
            if infer_request is not None:
                infer_request.cancellation.cancel()
            raise
        except Exception as exc:
            error = unexpected("ModelInfer", exc)
        await abort(context, error)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[InferRequestFrame], context: grpc.aio.ServicerContext
    ) -> None:
        """Requests and responses are framed by wire.py, as for ModelInfer."""
        metadata = context.invocation_metadata() or ()
        close_on_error = any(
            key == GRPC_ERROR_MODE_HEADER and value == "true" for key, value in metadata
        )
        stream = InferStream(self._inference, self._queries, self._tracer, close_on_error)
        self._streams.add(stream)
        try:
            await stream.run(request_iterator, context)
        finally:
            self._streams.discard(stream)

    def begin_shutdown(self) -> None:
        """Open streams take no more requests: they finish what is in flight and end."""
        for stream in list(self._streams):
            stream.stop_reading()

    # ------------------------------------------------------------------ model repository

    @_translate_errors
    async def RepositoryIndex(self, request: gs.RepositoryIndexRequest, context: Any) -> Any:
        entries = await self._admin.repository_index(request.repository_name, request.ready)
        return render.repository_index(entries)

    @_translate_errors
    async def RepositoryModelLoad(
        self, request: gs.RepositoryModelLoadRequest, context: Any
    ) -> Any:
        config = ""
        files: dict[str, bytes] = {}
        for key, param in request.parameters.items():
            choice = param.WhichOneof("parameter_choice")
            if key == "config":
                if choice != "string_param":
                    raise InvalidArgumentError(
                        "invalid value type for load parameter 'config', expected string_param."
                    )
                config = param.string_param
            elif key.startswith("file:"):
                if choice != "bytes_param":
                    raise InvalidArgumentError(
                        f"invalid value type for load parameter '{key}', expected bytes_param."
                    )
                files[key[len("file:") :]] = param.bytes_param
            else:
                raise InvalidArgumentError(f"unrecognized load parameter '{key}'.")
        await self._admin.load_model(request.model_name, config, files)
        return gs.RepositoryModelLoadResponse()

    @_translate_errors
    async def RepositoryModelUnload(
        self, request: gs.RepositoryModelUnloadRequest, context: Any
    ) -> Any:
        unload_dependents = False
        for key, param in request.parameters.items():
            if key != "unload_dependents":
                raise InvalidArgumentError(f"unrecognized unload parameter '{key}'.")
            if param.WhichOneof("parameter_choice") != "bool_param":
                raise InvalidArgumentError(
                    "invalid value type for unload parameter 'unload_dependents', expected "
                    "bool_param."
                )
            unload_dependents = param.bool_param
        await self._admin.unload_model(request.model_name, unload_dependents)
        return gs.RepositoryModelUnloadResponse()

    # ------------------------------------------------------------------ shared memory

    @_translate_errors
    async def SystemSharedMemoryStatus(
        self, request: gs.SystemSharedMemoryStatusRequest, context: Any
    ) -> Any:
        return render.system_shm_status(self._admin.system_shm_status(request.name))

    @_translate_errors
    async def SystemSharedMemoryRegister(
        self, request: gs.SystemSharedMemoryRegisterRequest, context: Any
    ) -> Any:
        self._admin.system_shm_register(
            request.name, request.key, request.offset, request.byte_size
        )
        return gs.SystemSharedMemoryRegisterResponse()

    @_translate_errors
    async def SystemSharedMemoryUnregister(
        self, request: gs.SystemSharedMemoryUnregisterRequest, context: Any
    ) -> Any:
        self._admin.system_shm_unregister(request.name)
        return gs.SystemSharedMemoryUnregisterResponse()

    @_translate_errors
    async def CudaSharedMemoryStatus(
        self, request: gs.CudaSharedMemoryStatusRequest, context: Any
    ) -> Any:
        return render.cuda_shm_status(self._admin.cuda_shm_status(request.name))

    @_translate_errors
    async def CudaSharedMemoryRegister(
        self, request: gs.CudaSharedMemoryRegisterRequest, context: Any
    ) -> Any:
        # UNIMPLEMENTED where the server has no GPU.
        self._admin.cuda_shm_register(
            request.name, request.raw_handle, request.device_id, request.byte_size
        )
        return gs.CudaSharedMemoryRegisterResponse()

    @_translate_errors
    async def CudaSharedMemoryUnregister(
        self, request: gs.CudaSharedMemoryUnregisterRequest, context: Any
    ) -> Any:
        # An unknown name (or none registered) succeeds, as in Triton: perf_analyzer calls
        # UnregisterCudaSharedMemory("") before every shared-memory run and stops if it fails.
        self._admin.cuda_shm_unregister(request.name)
        return gs.CudaSharedMemoryUnregisterResponse()

    # ------------------------------------------------------------------ trace and logging

    @_translate_errors
    async def TraceSetting(self, request: gs.TraceSettingRequest, context: Any) -> Any:
        if request.settings:
            # An empty value list clears the setting (back to the global value or default).
            updates: dict[str, list[str] | None] = {
                key: (list(setting.value) or None) for key, setting in request.settings.items()
            }
            settings = self._admin.update_trace_settings(request.model_name, updates)
        else:
            settings = self._admin.get_trace_settings(request.model_name)
        return render.trace_settings(settings)

    @_translate_errors
    async def LogSettings(self, request: gs.LogSettingsRequest, context: Any) -> Any:
        if request.settings:
            updates: dict[str, object] = {}
            for key, setting in request.settings.items():
                choice = setting.WhichOneof("parameter_choice")
                if choice is None:
                    raise InvalidArgumentError(f"log setting '{key}' has no value")
                updates[key] = getattr(setting, choice)
            settings = self._admin.update_log_settings(updates)
        else:
            settings = self._admin.get_log_settings()
        return render.log_settings(settings)


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1.Health: SERVING while the server is ready (for any service name)."""

    def __init__(self, queries: ModelQueries) -> None:
        self._queries = queries

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._queries.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)
