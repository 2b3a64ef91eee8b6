"""From the requests of one `execute` call to model batches, and from model outputs back to one
response per request. Shared by the framework backends (ONNX Runtime, PyTorch, TensorRT).

When the model batches (max_batch_size > 0), requests whose inputs agree on everything but the
first dimension are concatenated along it and run together; requests that differ (another
variable dim, a missing optional input) run in their own batch. Outputs are split back along the
first dimension as views, without copies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import InternalError, ModelExecutionError, TridentError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import (
    CONFIG_TYPE_TO_DATATYPE,
    InferenceResponse,
    Tensor,
    datatype_of_array,
)


@dataclass(slots=True)
class Batch:
    """Requests that run as one model call."""

    #: Positions of the requests in the `execute` call.
    indices: list[int]
    #: Model inputs by name (concatenated when the batch holds more than one request).
    inputs: dict[str, np.ndarray]
    #: Rows each request contributed along the first dimension; empty when the model does not
    #: batch.
    batch_sizes: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What the config says about one output: its v2 datatype and, when the config reshapes it,
    the dims the client sees."""

    name: str
    datatype: str
    reshape_to: tuple[int, ...] | None = None
    #: An implicit-state output of the sequence batcher: every response keeps it, asked for or
    #: not, because the batcher feeds it to the sequence's next request (and takes it out of
    #: the client's response unless the config also lists it as an output).
    state: bool = False


def output_specs(config: mc.ModelConfig) -> dict[str, OutputSpec]:
    """The config's outputs and the sequence batcher's state outputs (marked `state`)."""
    specs = {}
    for output in config.output:
        datatype = CONFIG_TYPE_TO_DATATYPE.get(mc.DataType.Name(output.data_type), "")
        reshape_to = tuple(output.dims) if output.HasField("reshape") else None
        specs[output.name] = OutputSpec(output.name, datatype, reshape_to)
    for state in config.sequence_batching.state:
        datatype = CONFIG_TYPE_TO_DATATYPE.get(mc.DataType.Name(state.data_type), "")
        spec = specs.get(state.output_name)
        reshape_to = spec.reshape_to if spec is not None else None
        specs[state.output_name] = OutputSpec(state.output_name, datatype, reshape_to, True)
    return specs


def state_output_names(config: mc.ModelConfig) -> list[str]:
    """The sequence batcher's implicit-state outputs (`sequence_batching.state[].output_name`)."""
    return [state.output_name for state in config.sequence_batching.state]


def fetched_output_names(config: mc.ModelConfig) -> list[str]:
    """What a framework backend fetches from the model: the config's outputs, then the state
    outputs it does not list."""
    names = [output.name for output in config.output]
    return names + [name for name in state_output_names(config) if name not in names]


def request_inputs(request: InFlightRequest) -> dict[str, Tensor]:
    """The request's inputs by name (the core's validation fills `inputs_by_name`)."""
    return request.inputs_by_name or {tensor.name: tensor for tensor in request.inputs}


def request_arrays(request: InFlightRequest) -> dict[str, np.ndarray]:
    """The request's input arrays by name."""
    arrays = {}
    for name, tensor in request_inputs(request).items():
        if tensor.data is None:
            # The core resolves shared-memory inputs before a request reaches a backend.
            raise InternalError(f"input '{name}' reached the backend without its data")
        arrays[name] = tensor.data
    return arrays


def form_batches(
    requests: list[InFlightRequest],
    batched: bool,
    arrays: list[dict[str, np.ndarray] | None] | None = None,
) -> list[Batch]:
    """Group the requests into model calls, in order of first appearance. `arrays` are the
    requests' inputs when the backend converted them first (default: the requests' own); a
    None entry leaves its request out (it has already failed)."""
    if arrays is None:
        arrays = [request_arrays(request) for request in requests]
    live = [(index, inputs) for index, inputs in enumerate(arrays) if inputs is not None]
    if not batched:
        return [Batch([index], inputs) for index, inputs in live]
    groups: dict[tuple[object, ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
    for index, inputs in live:
        key = tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()))
        groups.setdefault(key, []).append((index, inputs))
    return [_gather(members) for members in groups.values()]


def _gather(members: list[tuple[int, dict[str, np.ndarray]]]) -> Batch:
    indices = [index for index, _ in members]
    sizes = [next(iter(inputs.values())).shape[0] if inputs else 0 for _, inputs in members]
    if len(members) == 1:
        return Batch(indices, members[0][1], sizes)
    names = members[0][1]
    arrays = {
        name: np.concatenate([inputs[name] for _, inputs in members], axis=0) for name in names
    }
    return Batch(indices, arrays, sizes)


def split_outputs(batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each request's rows of the model outputs (views into the batch outputs)."""
    if len(batch.indices) == 1:
        return [outputs]
    total = sum(batch.batch_sizes)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ModelExecutionError(
                f"output '{name}' has shape {list(array.shape)}, but its first dimension "
                f"should be the batch size {total}: a model with max_batch_size > 0 must keep "
                "the batch dimension first in every output"
            )
    results: list[dict[str, np.ndarray]] = []
    start = 0
    for size in batch.batch_sizes:
        stop = start + size
        results.append({name: array[start:stop] for name, array in outputs.items()})
        start = stop
    return results


def requested_output_names(
    requests: list[InFlightRequest],
    batch: Batch,
    all_names: list[str],
    always: Iterable[str] = (),
) -> list[str]:
    """The outputs any request of the batch asked for (all of them when one asked for none),
    in config order, so the framework can skip computing or copying the rest. Implicit-state
    outputs (`always`) are fetched whatever the requests ask for."""
    wanted: set[str] = set(always)
    for index in batch.indices:
        named = requests[index].outputs
        if not named:
            return all_names
        wanted.update(output.name for output in named)
    return [name for name in all_names if name in wanted]


def make_response(
    request: InFlightRequest,
    outputs: dict[str, np.ndarray],
    specs: dict[str, OutputSpec],
    model_name: str,
    model_version: int,
    batched: bool,
) -> InferenceResponse:
    """The response for one request: the outputs it asked for (all when it named none), and
    always the implicit-state outputs, which the sequence batcher needs."""
    names = [output.name for output in request.outputs] or list(outputs)
    if request.outputs:
        names += [name for name, spec in specs.items() if spec.state and name not in names]
    tensors = []
    for name in names:
        array = outputs.get(name)
        if array is None:
            continue  # the core reports a requested output the model did not produce
        spec = specs.get(name)
        if spec is not None and spec.reshape_to is not None:
            array = _reshape_output(array, spec.reshape_to, batched)
        datatype = spec.datatype if spec is not None and spec.datatype else None
        tensors.append(
            Tensor(name, datatype or datatype_of_array(array), tuple(array.shape), array)
        )
    return InferenceResponse(
        model_name=model_name, model_version=str(model_version), id=request.id, outputs=tensors
    )


def _reshape_output(array: np.ndarray, dims: tuple[int, ...], batched: bool) -> np.ndarray:
    """Model shape -> the config's `dims` (the config's `reshape` is what the model produces)."""
    target = (array.shape[0], *dims) if batched and array.ndim > 0 else dims
    if sum(1 for d in target if d == -1) > 1:
        return array  # more than one variable dim: numpy cannot infer them; keep the model's
    return array.reshape(target)


def error_response(
    request: InFlightRequest, error: TridentError, model_name: str, model_version: int
) -> InferenceResponse:
    return InferenceResponse(
        model_name=model_name, model_version=str(model_version), id=request.id, error=error
    )


class BatchResponses:
    """One response slot per request of an `execute` call, filled batch by batch: the split
    outputs of a batch that ran, or the error of one that failed (only that batch's requests)."""

    __slots__ = ("_batched", "_model_name", "_model_version", "_requests", "_specs", "responses")

    def __init__(
        self,
        requests: list[InFlightRequest],
        specs: dict[str, OutputSpec],
        model_name: str,
        model_version: int,
        batched: bool,
    ) -> None:
        self._requests = requests
        self._specs = specs
        self._model_name = model_name
        self._model_version = model_version
        self._batched = batched
        self.responses: list[InferenceResponse | None] = [None] * len(requests)

    def fail_request(self, index: int, error: TridentError) -> None:
        self.responses[index] = error_response(
            self._requests[index], error, self._model_name, self._model_version
        )

    def fail(self, batch: Batch, error: TridentError) -> None:
        for index in batch.indices:
            self.fail_request(index, error)

    def respond(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        """Split a batch's outputs back into one response per request."""
        try:
            per_request = split_outputs(batch, outputs)
        except TridentError as error:
            self.fail(batch, error)
            return
        for index, request_outputs in zip(batch.indices, per_request):
            self.responses[index] = make_response(
                self._requests[index],
                request_outputs,
                self._specs,
                self._model_name,
                self._model_version,
                self._batched,
            )

    def result(self) -> list[InferenceResponse]:
        return self.responses  # type: ignore[return-value]  # every slot is filled by then
