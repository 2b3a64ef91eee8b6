"""Inference: the one entry point every frontend sends its decoded requests to.

A request is routed to its model version, validated against the config (validation.py), its
shared-memory inputs read, then submitted to the model's scheduler (scheduling/); the responses
come back through a responder, get their outputs finished (outputs.py) and return to the frontend
as `InferenceResponse`s. Nothing here knows a wire format.

Routing makes the request's InFlightRequest (in_flight.py), which the scheduler then owns: the
frontend's `InferenceRequest` is not changed from here on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

from trident.runtime.errors import (
    FailureReason,
    InvalidArgumentError,
    TridentError,
    UnavailableError,
    UnsupportedError,
)
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

from .cuda_shared_memory import CudaSharedMemoryRegistry
from .in_flight import InFlightRequest
from .loaded_model import LoadedModel
from .model_manager import ModelManager
from .outputs import finish_outputs
from .scheduling.base import SingleResponder, StreamResponder
from .shared_memory import SharedMemoryRegistry
from .validation import apply_reshapes, validate_request


class InferenceService:
    """Runs requests: `infer` for one response, `infer_stream` for any number."""

    def __init__(
        self,
        models: ModelManager,
        shared_memory: SharedMemoryRegistry,
        cuda_shared_memory: CudaSharedMemoryRegistry,
    ) -> None:
        self._models = models
        self._shared_memory = shared_memory
        self._cuda_shared_memory = cuda_shared_memory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopping = False

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called by the server on its event loop thread before serving: responders complete
        on this loop, directly when the model answers on its thread."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def begin_shutdown(self) -> None:
        """Refuse new requests (UNAVAILABLE); those in flight finish."""
        self._stopping = True

    # ---------------------------------------------------------------- routing

    def _route(self, flight: InFlightRequest) -> LoadedModel:
        """Resolve the model version and validate `flight` against it (filling its version and
        inputs by name)."""
        request = flight.request
        if request.trace is not None:
            request.trace.request_start(time.monotonic_ns(), request.id)
        if self._stopping:
            raise UnavailableError("server is shutting down")
        model = self._models.get(request.model_name, request.model_version)
        flight.version = model.version
        try:
            validate_request(flight, model)
            if model.uses_shared_memory(request):
                self._read_shared_memory_inputs(request)
            if model.has_reshape:
                apply_reshapes(flight, model)
        except TridentError as error:
            # Triton leaves these out of its failure counts; we count them (reason OTHER) so a
            # dashboard shows clients sending bad requests.
            model.stats.record_failure(FailureReason.OTHER, request.arrival_ns, time.monotonic_ns())
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
                in_cuda = tensor.shared_memory.region in self._cuda_shared_memory
                (on_gpu if in_cuda else on_host).append(tensor)
        if on_host:
            self._shared_memory.read_inputs(on_host)
        if on_gpu:
            self._cuda_shared_memory.read_inputs(on_gpu)

    # ---------------------------------------------------------------- running

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Run one request on a non-decoupled model and return its response.

        Raises TridentError for requests that fail; the error says why.
        """
        flight = InFlightRequest(request, 0)
        model = self._route(flight)
        if model.decoupled and self._answers_unary(model):
            return await self._infer_one_of_stream(model, flight)
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
        flight.responder = responder
        model.submit(flight)
        response = await responder.result()
        if response.error is not None:
            if request.trace is not None:
                request.trace.failed()
            raise response.error
        if cached is not None:
            cached.store(response)
        return self._complete(model, request, response)

    def _answers_unary(self, model: LoadedModel) -> bool:
        backend = self._models.backends.loaded_backend(model.backend_name)
        return backend is not None and backend.single_response_when_unary

    async def _infer_one_of_stream(
        self, model: LoadedModel, flight: InFlightRequest
    ) -> InferenceResponse:
        """A unary call on a decoupled model whose backend sends one response per request
        unless asked to stream (the llm backend): that response, or an error when there were
        more."""
        responses = []
        async for response in self.infer_stream(flight.request, routed=model, flight=flight):
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
        self,
        request: InferenceRequest,
        routed: LoadedModel | None = None,
        flight: InFlightRequest | None = None,
    ) -> AsyncIterator[InferenceResponse]:
        """Run one request on any model and yield its responses as they come.

        Validation errors raise before the first response; errors the model reports mid-stream
        come as responses with `error` set (and `final=True`). `routed` and `flight` (given
        together) are the model and in-flight request of a request already routed.
        """
        if routed is None or flight is None:
            flight = InFlightRequest(request, 0)
            model = self._route(flight)
        else:
            model = routed
        assert self._loop is not None
        cached = None
        if model.response_cache is not None:  # never set for decoupled models
            cached = model.response_cache.lookup(model.name, model.version, request, model.stats)
            if cached is not None and cached.response is not None:
                yield self._complete(model, request, cached.response)
                return
        responder = StreamResponder(self._loop, self._loop_thread)
        flight.responder = responder
        model.submit(flight)
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
        finish_outputs(model, request, response, self._shared_memory, self._cuda_shared_memory)
        if request.trace is not None and response.final:
            request.trace.stamp("REQUEST_END")
        return response
