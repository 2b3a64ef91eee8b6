"""Requests, responses and response senders as a Triton Python model sees them.

The same `InferenceRequest` class serves both directions, as in Triton: the server builds one per
request it hands to `execute`, and a model builds one to call another model (BLS, `exec` /
`async_exec`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.parameters import RESERVED_REQUEST_PARAMETERS
from trident.runtime.errors import TridentError
from trident.runtime.types import InferenceRequest as RuntimeRequest
from trident.runtime.types import InferenceResponse as RuntimeResponse
from trident.runtime.types import RequestedOutput

from . import bls
from .errors import TritonError, TritonModelException, from_trident_error, to_trident_error
from .tensor import Tensor, from_runtime_tensor, to_runtime_tensor

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_GPU = 2


class PreferredMemory:
    """Where a BLS caller would like output tensors (accepted; outputs arrive in host memory)."""

    def __init__(self, preferred_memory_type: int, preferred_device_id: int = 0) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    """The trace a request belongs to (`request.trace()`); Trident has no trace context to give."""

    def get_context(self) -> str | None:
        return None


def _parameters_json(parameters: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise TritonModelException(f"{what} parameters must be a dict, got {type(parameters)}")
    for key, value in parameters.items():
        if not isinstance(key, str):
            raise TritonModelException(f"{what} parameter names must be str, got {key!r}")
        if not isinstance(value, (bool, int, float, str)):
            raise TritonModelException(
                f"Expect parameters values to have type bool, int, float or str, found type "
                f"{type(value).__name__} for '{key}'"
            )
    return dict(parameters)


class InferenceRequest:
    """A request: the one `execute` receives, or one a model sends to another model (BLS).

    BLS: `InferenceRequest(model_name=..., inputs=[...], requested_output_names=[...])`, then
    `exec()` (blocking) or `await async_exec()`; `decoupled=True` gives an iterator of responses.
    """

    __slots__ = (
        "_correlation_id",
        "_decoupled",
        "_flags",
        "_inputs",
        "_model_name",
        "_model_version",
        "_parameters",
        "_preferred_memory",
        "_request_id",
        "_requested_output_names",
        "_sender",
        "_server_request",
        "_timeout",
        "_trace",
    )

    def __init__(
        self,
        request_id: str = "",
        correlation_id: int | str = 0,
        inputs: Sequence[Tensor] | None = None,
        requested_output_names: Sequence[str] | None = None,
        model_name: str | None = None,
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: PreferredMemory | None = None,
        trace: InferenceTrace | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        if model_name is None or inputs is None or requested_output_names is None:
            raise TritonModelException(
                "InferenceRequest needs model_name, inputs and requested_output_names"
            )
        for tensor in inputs:
            if not isinstance(tensor, Tensor):
                raise TritonModelException(
                    f"InferenceRequest inputs must be pb_utils.Tensor objects, got "
                    f"{type(tensor).__name__}"
                )
        if not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._inputs = list(inputs)
        self._requested_output_names = [str(name) for name in requested_output_names]
        self._model_name = model_name
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._preferred_memory = preferred_memory
        self._trace = trace or InferenceTrace()
        self._parameters: dict[str, Any] | str = _parameters_json(parameters, "request")
        self._server_request: InFlightRequest | None = None
        self._sender: InferenceResponseSender | None = None
        self._decoupled = False

    @classmethod
    def _from_server(
        cls, request: InFlightRequest, all_outputs: list[str], decoupled: bool
    ) -> InferenceRequest:
        """Wrap a request the server hands to `execute` (input arrays are not copied)."""
        self = cls.__new__(cls)
        self._request_id = request.id
        self._correlation_id = request.sequence_id
        self._inputs = [from_runtime_tensor(tensor) for tensor in request.inputs]
        # Triton fills in every output when the client named none.
        self._requested_output_names = (
            [output.name for output in request.outputs] if request.outputs else all_outputs
        )
        self._model_name = request.model_name
        self._model_version = request.version or request.model_version or -1
        flags = TRITONSERVER_REQUEST_FLAG_SEQUENCE_START if request.sequence_start else 0
        if request.sequence_end:
            flags |= TRITONSERVER_REQUEST_FLAG_SEQUENCE_END
        self._flags = flags
        self._timeout = request.timeout_us
        self._preferred_memory = None
        self._trace = _NO_TRACE
        self._parameters = request.parameters  # rendered on demand
        self._server_request = request
        self._sender = None  # made when the model asks for it
        self._decoupled = decoupled
        return self

    # ------------------------------------------------------------------------- accessors

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def requested_output_names(self) -> list[str]:
        return self._requested_output_names

    def flags(self) -> int:
        return self._flags

    def set_flags(self, flags: int) -> None:
        self._flags = flags

    def timeout(self) -> int:
        """The request timeout in microseconds (0 = none)."""
        return self._timeout

    def parameters(self) -> str:
        """The request parameters as a JSON object string (as Triton gives them)."""
        parameters = self._parameters
        if isinstance(parameters, str):
            return parameters
        if self._server_request is not None:
            # The reserved keys set request fields; Triton does not pass them on to the model.
            parameters = {
                k: v for k, v in parameters.items() if k not in RESERVED_REQUEST_PARAMETERS
            }
        rendered = json.dumps(parameters, default=str)
        self._parameters = rendered
        return rendered

    def trace(self) -> InferenceTrace:
        return self._trace

    def is_cancelled(self) -> bool:
        """Whether the client cancelled this request (or went away)."""
        return self._server_request is not None and self._server_request.cancellation.cancelled

    def get_response_sender(self) -> InferenceResponseSender:
        """The sender for this request's responses (decoupled models send all through it)."""
        if self._server_request is None:
            raise TritonModelException(
                "get_response_sender() is only available on the requests passed to execute"
            )
        sender = self._sender
        if sender is None:
            with _SENDER_CREATION:
                if self._sender is None:
                    self._sender = InferenceResponseSender(self._server_request, self._decoupled)
                sender = self._sender
        return sender

    def _end_with(self, error: TridentError) -> None:
        """Fail the request with `error` unless the model already ended it."""
        self.get_response_sender()._fail_if_open(error)

    def set_release_flags(self, flags: int) -> None:
        if flags & TRITONSERVER_REQUEST_RELEASE_RESCHEDULE:
            raise TritonModelException(
                "request rescheduling (TRITONSERVER_REQUEST_RELEASE_RESCHEDULE) is not supported "
                "by Trident"
            )

    # ------------------------------------------------------------------------- BLS

    def exec(self, decoupled: bool = False) -> InferenceResponse | ResponseIterator:
        """Run this request on `model_name` and wait. Failures come back as a response whose
        `has_error()` is true. With `decoupled=True`, an iterator over all of its responses."""
        request = self._to_server()
        if decoupled:
            return ResponseIterator(bls.LiveStream(request))
        try:
            return _from_server_response(bls.infer_blocking(request))
        except TridentError as exc:
            return InferenceResponse(error=from_trident_error(exc))

    def async_exec(self, decoupled: bool = False) -> asyncio.Future[Any]:
        """Start this request and return an awaitable of its response (or, with
        `decoupled=True`, of an iterator over all of its responses, gathered before it resolves).
        """
        loop = asyncio.get_running_loop()
        bls.calling_instance()  # fail here, not at await, when there is no model to call from
        return loop.create_task(_async_exec(self._to_server(), decoupled))

    def _to_server(self) -> RuntimeRequest:
        parameters = self._parameters
        return RuntimeRequest(
            model_name=self._model_name,
            model_version=max(int(self._model_version), 0),
            id=self._request_id,
            inputs=[to_runtime_tensor(tensor) for tensor in self._inputs],
            outputs=[RequestedOutput(name) for name in self._requested_output_names],
            parameters=json.loads(parameters) if isinstance(parameters, str) else dict(parameters),
            timeout_us=int(self._timeout),
            sequence_id=self._correlation_id,
            sequence_start=bool(self._flags & TRITONSERVER_REQUEST_FLAG_SEQUENCE_START),
            sequence_end=bool(self._flags & TRITONSERVER_REQUEST_FLAG_SEQUENCE_END),
        )

    def __repr__(self) -> str:
        names = [tensor.name() for tensor in self._inputs]
        return f"InferenceRequest(model_name={self._model_name!r}, inputs={names})"


_NO_TRACE = InferenceTrace()
_SENDER_CREATION = threading.Lock()


async def _async_exec(request: RuntimeRequest, decoupled: bool) -> Any:
    if decoupled:
        return ResponseIterator(iter(await bls.stream_collect(request)))
    try:
        return _from_server_response(await bls.infer_awaitable(request))
    except TridentError as exc:
        return InferenceResponse(error=from_trident_error(exc))


class InferenceResponse:
    """`InferenceResponse(output_tensors=[...], error=None, parameters=None)`."""

    __slots__ = ("_error", "_output_tensors", "_parameters")

    def __init__(
        self,
        output_tensors: Sequence[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        if output_tensors is None:
            output_tensors = []
        if not isinstance(output_tensors, (list, tuple)):
            raise TritonModelException('"output_tensors" must be a list.')
        for tensor in output_tensors:
            if not isinstance(tensor, Tensor):
                raise TritonModelException(
                    f'"output_tensors" must hold pb_utils.Tensor objects, got '
                    f"{type(tensor).__name__}"
                )
        if error is not None and not isinstance(error, TritonError):
            raise TritonModelException(
                f'"error" must be a pb_utils.TritonError, got {type(error).__name__}'
            )
        self._output_tensors = list(output_tensors)
        self._error = error
        self._parameters = _parameters_json(parameters, "response")

    def output_tensors(self) -> list[Tensor]:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        """The response parameters as a JSON object string."""
        return json.dumps(self._parameters)

    def _to_server(self, final: bool = True) -> RuntimeResponse:
        if self._error is not None:
            return RuntimeResponse(error=to_trident_error(self._error), final=final)
        return RuntimeResponse(
            outputs=[to_runtime_tensor(tensor) for tensor in self._output_tensors],
            parameters=dict(self._parameters),
            final=final,
        )

    def __repr__(self) -> str:
        if self._error is not None:
            return f"InferenceResponse(error={self._error!r})"
        return f"InferenceResponse(output_tensors={self._output_tensors!r})"


def _from_server_response(response: RuntimeResponse) -> InferenceResponse:
    """A response the server produced, as the BLS caller sees it (no copies)."""
    result = InferenceResponse.__new__(InferenceResponse)
    result._error = from_trident_error(response.error) if response.error is not None else None
    result._output_tensors = (
        [] if response.error is not None else [from_runtime_tensor(t) for t in response.outputs]
    )
    result._parameters = dict(response.parameters)
    return result


class ResponseIterator:
    """The responses of a BLS request made with `decoupled=True`. The last one may carry no
    outputs (a model's bare final flag)."""

    def __init__(self, source: bls.LiveStream | Iterator[RuntimeResponse]) -> None:
        self._source = source

    def __iter__(self) -> ResponseIterator:
        return self

    def __next__(self) -> InferenceResponse:
        if isinstance(self._source, bls.LiveStream):
            response = self._source.next()
            if response is None:
                raise StopIteration
        else:
            response = next(self._source)
        return _from_server_response(response)

    def cancel(self) -> None:
        """Cancel the request: the model sees `is_cancelled()`, and iteration ends."""
        if isinstance(self._source, bls.LiveStream):
            self._source.cancel()


class InferenceResponseSender:
    """Sends a request's responses as they are ready, from any thread.

    Decoupled models send any number and end with `flags=TRITONSERVER_RESPONSE_COMPLETE_FINAL`.
    Other models may send their single response this way instead of returning it.
    """

    __slots__ = ("_closed", "_decoupled", "_lock", "_request", "_sent")

    def __init__(self, request: InFlightRequest, decoupled: bool) -> None:
        self._request = request
        self._decoupled = decoupled
        self._lock = threading.Lock()
        self._closed = False
        self._sent = 0

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if flags not in (0, TRITONSERVER_RESPONSE_COMPLETE_FINAL):
            raise TritonModelException("Unable to send response. Unsupported flag provided.")
        if response is None and flags == 0:
            raise TritonModelException(
                "Inference Response object must be provided when the response flags is set to zero."
            )
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException(
                f"send() takes a pb_utils.InferenceResponse, got {type(response).__name__}"
            )
        final = flags == TRITONSERVER_RESPONSE_COMPLETE_FINAL
        with self._lock:
            if not self._decoupled:
                if response is not None and self._sent > 0:
                    raise TritonModelException(
                        "Unable to send response. Non-decoupled model cannot send more than one "
                        "response."
                    )
                if response is None and self._sent == 0:
                    raise TritonModelException(
                        "Unable to send response. Non-decoupled model cannot send complete final "
                        "before sending a response."
                    )
            if self._closed:
                raise TritonModelException(
                    "Unable to send response. Response sender has been closed."
                )
            self._closed = final
            self._sent += 1
        if not self._decoupled:
            if response is not None:  # the one response ends the request
                self._request.responder.send(response._to_server(final=True))
            return
        if response is None:
            self._request.responder.send(RuntimeResponse(final=True))
        else:
            self._request.responder.send(response._to_server(final=final))

    def is_cancelled(self) -> bool:
        return self._request.cancellation.cancelled

    def _used(self) -> bool:
        with self._lock:
            return self._sent > 0

    def _fail_if_open(self, error: TridentError) -> None:
        """End the request with `error` unless the model already ended it."""
        with self._lock:
            if self._closed or (not self._decoupled and self._sent > 0):
                return
            self._closed = True
        self._request.responder.send(RuntimeResponse(error=error, final=True))
