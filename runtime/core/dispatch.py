"""The data plane: the one protocol-agnostic entry point every frontend calls.

Frontends translate their wire format into the types in runtime/types.py (or the protocol's
protobuf messages for metadata, config and statistics), call a method here, and encode what comes
back. Nothing here knows about HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from trident.runtime.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    TridentError,
    UnavailableError,
    UnsupportedError,
)
from trident.runtime.observability.log_settings import LogSettings
from trident.runtime.observability.metrics import render_metrics
from trident.runtime.observability.trace_settings import TraceSettings
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import (
    CONFIG_TYPE_TO_DATATYPE,
    InferenceRequest,
    InferenceResponse,
    Tensor,
)

from .cuda_shared_memory import CudaSharedMemoryRegistry, CudaShmRegionStatus
from .loaded_model import LoadedModel
from .model_config import message_to_dict
from .model_manager import ModelManager, RepositoryIndexEntry
from .model_versions import parse_model_version
from .outputs import finish_outputs
from .scheduling.base import SingleResponder, StreamResponder
from .shared_memory import SharedMemoryRegistry, SystemShmRegionStatus
from .validation import apply_reshapes, validate_request

SERVER_NAME = "trident"
#: The Triton release whose protocol surface Trident implements (reported as the version).
PROTOCOL_VERSION = "2.51.0"

EXTENSIONS: tuple[str, ...] = (
    "classification",
    "sequence",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "trace",
    "logging",
    "generate",
)
#: Advertised (after system_shared_memory, as Triton lists it) only where a GPU is visible.
CUDA_SHARED_MEMORY_EXTENSION = "cuda_shared_memory"


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


class DataPlane:
    """Health, metadata, inference, repository, shared-memory, trace and log settings."""

    def __init__(
        self,
        models: ModelManager,
        shared_memory: SharedMemoryRegistry,
        log_settings: LogSettings,
        trace_settings: TraceSettings,
        strict_readiness: bool = True,
        cuda_shared_memory: CudaSharedMemoryRegistry | None = None,
    ) -> None:
        self.models = models
        self.shared_memory = shared_memory
        # Opens libcudart only on the first CUDA registration, never here.
        if cuda_shared_memory is None:
            cuda_shared_memory = CudaSharedMemoryRegistry()
        self.cuda_shared_memory = cuda_shared_memory
        self.log_settings = log_settings
        self.trace_settings = trace_settings
        self.strict_readiness = strict_readiness
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopping = False

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called by the server on its event loop thread before serving."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def begin_shutdown(self) -> None:
        self._stopping = True

    # ---------------------------------------------------------------- health and metadata

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if self._stopping:
            return False
        if not self.strict_readiness:
            return True
        return self.models.all_ready()

    def server_metadata(self) -> ServerMetadata:
        extensions = EXTENSIONS
        if self.cuda_shared_memory.available():
            at = EXTENSIONS.index("system_shared_memory") + 1
            extensions = (*EXTENSIONS[:at], CUDA_SHARED_MEMORY_EXTENSION, *EXTENSIONS[at:])
        return ServerMetadata(SERVER_NAME, PROTOCOL_VERSION, extensions)

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.models.is_ready(name, parse_model_version(version))

    def model_metadata(self, name: str, version: str = "") -> gs.ModelMetadataResponse:
        model = self.models.get(name, parse_model_version(version))
        config = model.config
        response = gs.ModelMetadataResponse(
            name=name,
            platform=config.platform or config.backend,
        )
        if version:
            response.versions.append(str(model.version))
        else:
            response.versions.extend(str(v) for v in self.models.ready_versions(name))
        batch_prefix = [-1] if config.max_batch_size > 0 else []
        for source, target in ((config.input, response.inputs), (config.output, response.outputs)):
            for tensor in source:
                target.add(
                    name=tensor.name,
                    datatype=CONFIG_TYPE_TO_DATATYPE.get(mc.DataType.Name(tensor.data_type), ""),
                    shape=[*batch_prefix, *tensor.dims],
                )
        return response

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        return self.models.get(name, parse_model_version(version)).config

    def model_statistics(self, name: str = "", version: str = "") -> gs.ModelStatisticsResponse:
        response = gs.ModelStatisticsResponse()
        models: Iterable[LoadedModel]
        if name:
            models = self.models.loaded_versions_of(name, parse_model_version(version))
        else:
            models = self.models.loaded_versions()
        for model in models:
            response.model_stats.append(model.stats.to_proto(model.name, model.version))
        return response

    def model_statistics_json(self, name: str = "", version: str = "") -> dict[str, Any]:
        """The statistics as HTTP JSON: Triton's fields, plus Trident's `batch_close_reasons`
        per model (why each dynamic batch closed, docs/batching.md; tritonclient ignores unknown
        keys). gRPC answers Triton's message unchanged."""
        body = message_to_dict(self.model_statistics(name, version))
        for entry in body.get("model_stats", []):
            model = self.models.get(entry["name"], int(entry["version"]))
            entry["batch_close_reasons"] = dict(model.stats.batch_close_reasons)
        return body

    def metrics_text(self) -> str:
        """Prometheus text exposition of every loaded model version's counters."""
        text = render_metrics(self.models.loaded_versions(), self.models.response_cache)
        return text + "".join(backend.metrics_text() for backend in self.models.backends.loaded())

    def is_decoupled(self, name: str, version: str = "") -> bool:
        return self.models.get(name, parse_model_version(version)).decoupled

    # ---------------------------------------------------------------- inference

    def _route(self, request: InferenceRequest) -> LoadedModel:
        if request.trace is not None:
            request.trace.request_start(time.monotonic_ns(), request.id)
        if self._stopping:
            raise UnavailableError("server is shutting down")
        model = self.models.get(request.model_name, request.model_version)
        request.resolved_version = model.version
        try:
            validate_request(request, model)
            if model.uses_shared_memory(request):
                self._read_shared_memory_inputs(request)
            if model.has_reshape:
                apply_reshapes(request, model)
        except TridentError as error:
            # Triton leaves these out of its failure counts; we count them (reason OTHER) so a
            # dashboard shows clients sending bad requests.
            model.stats.record_failure("OTHER", request.arrival_ns, time.monotonic_ns())
            if request.trace is not None:
                request.trace.failed()
            raise error
        if request.trace is not None:
            request.trace.queued(model.version, request.inputs)
        return model

    def _read_shared_memory_inputs(self, request: InferenceRequest) -> None:
        # A region name belongs to at most one kind (registration enforces it, as in Triton):
        # a name the CUDA registry holds is a CUDA region; any other is looked up as system
        # shared memory, which reports the unknown ones.
        on_gpu: list[Tensor] = []
        on_host: list[Tensor] = []
        for tensor in request.inputs:
            if tensor.shared_memory is not None:
                in_cuda = tensor.shared_memory.region in self.cuda_shared_memory
                (on_gpu if in_cuda else on_host).append(tensor)
        if on_host:
            self.shared_memory.read_inputs(on_host)
        if on_gpu:
            self.cuda_shared_memory.read_inputs(on_gpu)

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Run one request on a non-decoupled model and return its response.

        Raises TridentError for requests that fail; the error says why.
        """
        model = self._route(request)
        if model.decoupled and self._answers_unary(model):
            return await self._infer_one_of_stream(model, request)
        if model.decoupled:
            raise UnsupportedError(
                f"model '{model.name}' is decoupled (it may send any number of responses): "
                "call it through gRPC ModelStreamInfer, HTTP generate_stream, or /infer with "
                "'Accept: text/event-stream'"
            )
        assert self._loop is not None
        cached = None
        if model.response_cache is not None:  # response_cache { enable: true } + --cache-config
            cached = model.response_cache.lookup(model.name, model.version, request, model.stats)
            if cached is not None and cached.response is not None:
                return self._complete(model, request, cached.response)
        responder = SingleResponder(self._loop, self._loop_thread)
        request.responder = responder
        model.submit(request)
        response = await responder.result()
        if response.error is not None:
            if request.trace is not None:
                request.trace.failed()
            raise response.error
        if cached is not None:
            cached.store(response)
        return self._complete(model, request, response)

    def _answers_unary(self, model: LoadedModel) -> bool:
        backend = self.models.backends.loaded_backend(model.backend_name)
        return backend is not None and backend.single_response_when_unary

    async def _infer_one_of_stream(
        self, model: LoadedModel, request: InferenceRequest
    ) -> InferenceResponse:
        """A unary call on a decoupled model whose backend sends one response per request
        unless asked to stream (the llm backend): that response, or an error when there were
        more."""
        responses = []
        async for response in self.infer_stream(request, routed=model):
            if response.error is not None:
                raise response.error
            if response.outputs or response.parameters:
                responses.append(response)
        if len(responses) != 1:
            raise InvalidArgumentError(
                f"model '{model.name}' sent {len(responses)} responses to a unary call, which "
                "carries exactly one: use streaming (gRPC ModelStreamInfer, generate_stream)"
            )
        return responses[0]

    async def infer_stream(
        self, request: InferenceRequest, routed: LoadedModel | None = None
    ) -> AsyncIterator[InferenceResponse]:
        """Run one request on any model and yield its responses as they come.

        Validation errors raise before the first response; errors the model reports mid-stream
        come as responses with `error` set (and `final=True`).
        """
        model = routed if routed is not None else self._route(request)
        assert self._loop is not None
        cached = None
        if model.response_cache is not None:  # never set for decoupled models
            cached = model.response_cache.lookup(model.name, model.version, request, model.stats)
            if cached is not None and cached.response is not None:
                yield self._complete(model, request, cached.response)
                return
        responder = StreamResponder(self._loop, self._loop_thread)
        request.responder = responder
        model.submit(request)
        async for response in responder:
            if response.error is None:
                if cached is not None:
                    cached.store(response)
                try:
                    response = self._complete(model, request, response)
                except TridentError as exc:
                    response = InferenceResponse(error=exc, final=response.final)
            if response.error is not None:
                response.model_name = model.name
                response.model_version = str(model.version)
                response.id = request.id
            yield response

    def _complete(
        self, model: LoadedModel, request: InferenceRequest, response: InferenceResponse
    ) -> InferenceResponse:
        response.model_name = model.name
        response.model_version = str(model.version)
        response.id = request.id
        finish_outputs(model, request, response, self.shared_memory, self.cuda_shared_memory)
        if request.trace is not None and response.final:
            request.trace.stamp("REQUEST_END")
        return response

    # ---------------------------------------------------------------- model repository

    async def repository_index(
        self, repository: str = "", ready_only: bool = False
    ) -> list[RepositoryIndexEntry]:
        return self.models.index(repository, ready_only)

    async def load_model(
        self, name: str, config_json: str = "", files: dict[str, bytes] | None = None
    ) -> None:
        await self.models.load_via_api(name, config_json, files or {})

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        await self.models.unload_via_api(name, unload_dependents)

    # ---------------------------------------------------------------- shared memory

    def system_shm_status(self, name: str = "") -> list[SystemShmRegionStatus]:
        return self.shared_memory.status(name)

    def system_shm_register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        # System and CUDA regions share one namespace (as in Triton), so a request's
        # shared_memory_region names exactly one region.
        if name in self.cuda_shared_memory:
            raise AlreadyExistsError(
                f"shared memory region '{name}' is already registered as CUDA shared memory; "
                "unregister it first"
            )
        self.shared_memory.register(name, key, offset, byte_size)

    def system_shm_unregister(self, name: str = "") -> None:
        self.shared_memory.unregister(name)

    def cuda_shm_status(self, name: str = "") -> list[CudaShmRegionStatus]:
        return self.cuda_shared_memory.status(name)

    def cuda_shm_register(
        self, name: str, raw_handle: bytes, device_id: int, byte_size: int
    ) -> None:
        """Register a CUDA IPC handle; UnsupportedError where there is no GPU."""
        if name and self._is_system_region(name):
            raise AlreadyExistsError(
                f"shared memory region '{name}' is already registered as system shared "
                "memory; unregister it first"
            )
        self.cuda_shared_memory.register(name, raw_handle, device_id, byte_size)

    def cuda_shm_unregister(self, name: str = "") -> None:
        self.cuda_shared_memory.unregister(name)

    def _is_system_region(self, name: str) -> bool:
        try:
            self.shared_memory.status(name)
        except NotFoundError:
            return False
        return True

    # ---------------------------------------------------------------- trace and log settings

    def get_trace_settings(self, model: str = "") -> dict[str, list[str]]:
        if model:
            self.models.get_any(model)
        return self.trace_settings.get(model)

    def update_trace_settings(
        self, model: str, updates: dict[str, list[str] | None]
    ) -> dict[str, list[str]]:
        if model:
            self.models.get_any(model)
        return self.trace_settings.update(model, updates)

    def get_log_settings(self) -> dict[str, bool | int | str]:
        return self.log_settings.as_dict()

    def update_log_settings(self, updates: dict[str, object]) -> dict[str, bool | int | str]:
        return self.log_settings.update(updates)
