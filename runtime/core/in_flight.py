"""The core's own object for a request in flight.

A frontend decodes the wire into an `InferenceRequest` and hands it to the core; from routing on,
the core works on an `InFlightRequest` that wraps it: the version routing resolved, the inputs
the model gets (the request's own list until a layer adds or replaces some), those inputs by name
once validated, and the responder its responses go to. Routing (inference.py) and warm-up create
one per request; the scheduler owns it from then on. A layer that redirects responses (the
dynamic batcher's ordered slots, the sequence batcher's state keeper, an ensemble step) sets the
in-flight object's `responder`, never a field of the frontend's request, so what the frontend
decoded stays as it decoded it.

Backends receive these objects: everything they read of the wire fields is forwarded read-only.
"""

from __future__ import annotations

from typing import Any

from trident.runtime.types import (
    CancellationToken,
    InferenceRequest,
    RequestedOutput,
    Tensor,
)


class InFlightRequest:
    """One request as the core runs it; created by routing, owned by the scheduler.

    A plain class with `__slots__` rather than a dataclass: the direct scheduler's inline path
    builds one per request, and a hand-written `__init__` with positional arguments is the
    cheapest way to do it.
    """

    __slots__ = ("inputs", "inputs_by_name", "request", "responder", "version")

    def __init__(
        self,
        request: InferenceRequest,
        version: int,
        inputs: list[Tensor] | None = None,
        inputs_by_name: dict[str, Tensor] | None = None,
        responder: Any = None,
    ) -> None:
        #: What the frontend decoded; the core does not change it.
        self.request = request
        #: The model version routing resolved (the request's `model_version` may be 0: "any").
        self.version = version
        #: The inputs the model gets: the request's own list (not copied) until a layer adds or
        #: replaces inputs (the sequence batcher's control and state tensors), which then sets a
        #: new list here.
        self.inputs: list[Tensor] = request.inputs if inputs is None else inputs
        #: The inputs by name; filled by validation (validation.py).
        self.inputs_by_name: dict[str, Tensor] = {} if inputs_by_name is None else inputs_by_name
        #: Where the responses go; set by routing, replaced by layers that redirect them.
        self.responder: Any = responder

    def input(self, name: str) -> Tensor | None:
        """The input called `name`, or None."""
        return self.inputs_by_name.get(name)

    def __repr__(self) -> str:
        return (
            f"InFlightRequest(model={self.request.model_name!r}, version={self.version}, "
            f"id={self.request.id!r}, inputs={[tensor.name for tensor in self.inputs]})"
        )

    # The frontend's fields, read-only (properties, so that no layer can write them here).

    @property
    def model_name(self) -> str:
        return self.request.model_name

    @property
    def model_version(self) -> int:
        """The version the client asked for (0: let the version policy choose)."""
        return self.request.model_version

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def outputs(self) -> list[RequestedOutput]:
        return self.request.outputs

    @property
    def parameters(self) -> dict[str, Any]:
        return self.request.parameters

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def timeout_us(self) -> int:
        return self.request.timeout_us

    @property
    def sequence_id(self) -> int | str:
        return self.request.sequence_id

    @property
    def sequence_start(self) -> bool:
        return self.request.sequence_start

    @property
    def sequence_end(self) -> bool:
        return self.request.sequence_end

    @property
    def arrival_ns(self) -> int:
        return self.request.arrival_ns

    @property
    def cancellation(self) -> CancellationToken:
        return self.request.cancellation

    @property
    def trace(self) -> Any:
        return self.request.trace


def validated(request: InferenceRequest, version: int, responder: Any = None) -> InFlightRequest:
    """An in-flight request whose inputs by name are filled without validation: for requests
    the core builds itself (warm-up samples, a sequence's null requests) and for tests."""
    return InFlightRequest(
        request, version, None, {tensor.name: tensor for tensor in request.inputs}, responder
    )
