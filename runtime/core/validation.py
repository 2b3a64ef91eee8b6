"""Checks a request against its model's configuration before it is queued.

Messages follow Triton's wording (tools and people grep for them), with what to change added
where Triton leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from trident.runtime.errors import InvalidArgumentError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import CONFIG_TYPE_TO_DATATYPE, element_count

from .in_flight import InFlightRequest


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input or output as the model's config declares it (dims without the batch dim)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False
    #: `reshape` from the config: the shape the model sees (without the batch dim).
    reshape: tuple[int, ...] | None = None


def tensor_specs(
    tensors: list[mc.ModelInput] | list[mc.ModelOutput],
) -> dict[str, TensorSpec]:
    specs = {}
    for tensor in tensors:
        reshape = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else None
        specs[tensor.name] = TensorSpec(
            name=tensor.name,
            datatype=CONFIG_TYPE_TO_DATATYPE[mc.DataType.Name(tensor.data_type)],
            dims=tuple(tensor.dims),
            optional=getattr(tensor, "optional", False),
            reshape=reshape,
        )
    return specs


class _ModelView(Protocol):
    """What validation needs from a loaded model (see LoadedModel)."""

    name: str
    max_batch_size: int
    input_specs: dict[str, TensorSpec]
    output_specs: dict[str, TensorSpec]
    required_inputs: tuple[str, ...]


def _request_id(request: InFlightRequest) -> str:
    return f"[request id: {request.id or '<id_unknown>'}] "


def _dims_match(expected: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    if len(expected) != len(actual):
        return False
    return all(e == -1 or e == a for e, a in zip(expected, actual))


def validate_request(request: InFlightRequest, model: _ModelView) -> None:
    """Raise InvalidArgumentError unless every input and requested output fits the model.

    Fills `request.inputs_by_name`.
    """
    specs = model.input_specs
    by_name = request.inputs_by_name
    by_name.clear()
    batched = model.max_batch_size > 0
    batch_size = 0
    for tensor in request.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise InvalidArgumentError(
                f"{_request_id(request)}unexpected inference input '{tensor.name}' for model "
                f"'{model.name}'; the model's inputs are: {', '.join(specs) or '(none)'}"
            )
        if tensor.name in by_name:
            raise InvalidArgumentError(
                f"{_request_id(request)}input '{tensor.name}' is given more than once"
            )
        by_name[tensor.name] = tensor
        if tensor.datatype != spec.datatype:
            raise InvalidArgumentError(
                f"{_request_id(request)}inference input '{tensor.name}' data-type is "
                f"'{tensor.datatype}', but model '{model.name}' expects '{spec.datatype}'"
            )
        shape = tensor.shape
        if batched:
            if not shape or not _dims_match(spec.dims, shape[1:]):
                raise InvalidArgumentError(
                    f"{_request_id(request)}unexpected shape for input '{tensor.name}' for model "
                    f"'{model.name}'. Expected {[-1, *spec.dims]}, got {list(shape)}. NOTE: "
                    "Setting a non-zero max_batch_size in the model config requires a batch "
                    "dimension to be prepended to each input shape."
                )
            this_batch = shape[0]
            if this_batch < 1 or this_batch > model.max_batch_size:
                raise InvalidArgumentError(
                    f"{_request_id(request)}inference request batch-size must be <= "
                    f"{model.max_batch_size} for '{model.name}'"
                    + ("" if this_batch >= 1 else f" and >= 1 (got {this_batch})")
                )
            if batch_size and this_batch != batch_size:
                raise InvalidArgumentError(
                    f"{_request_id(request)}inputs disagree on the batch size: "
                    f"'{tensor.name}' has {this_batch}, an earlier input has {batch_size}"
                )
            batch_size = this_batch
        elif not _dims_match(spec.dims, shape):
            raise InvalidArgumentError(
                f"{_request_id(request)}unexpected shape for input '{tensor.name}' for model "
                f"'{model.name}'. Expected {list(spec.dims)}, got {list(shape)}"
            )
        data = tensor.data
        if data is not None and data.size != element_count(shape):
            raise InvalidArgumentError(
                f"{_request_id(request)}input '{tensor.name}' holds {data.size} elements but "
                f"its shape {list(shape)} needs {element_count(shape)}"
            )
    missing = [name for name in model.required_inputs if name not in by_name]
    if missing:
        raise InvalidArgumentError(
            f"{_request_id(request)}expected {len(model.required_inputs)} inputs but got "
            f"{len(by_name)} inputs for model '{model.name}'. Got input(s) "
            f"{list(by_name)}, but missing required input(s) {missing}. Please provide "
            "all required input(s)."
        )
    for output in request.outputs:
        if output.name not in model.output_specs:
            raise InvalidArgumentError(
                f"{_request_id(request)}unexpected inference output '{output.name}' for model "
                f"'{model.name}'; the model's outputs are: {', '.join(model.output_specs)}"
            )


def apply_reshapes(request: InFlightRequest, model: _ModelView) -> None:
    """Give the model its inputs in the config's `reshape` shapes (the client sends `dims`).

    Reshaped inputs are new tensors (views of the same data) in a new list: the frontend's
    tensors keep the shapes the client sent."""
    batched = model.max_batch_size > 0
    inputs = []
    for tensor in request.inputs:
        reshape = model.input_specs[tensor.name].reshape
        if reshape is not None and tensor.data is not None:
            shape = (tensor.shape[0], *reshape) if batched else reshape
            tensor = replace(tensor, shape=tuple(shape), data=tensor.data.reshape(shape))
            request.inputs_by_name[tensor.name] = tensor
        inputs.append(tensor)
    request.inputs = inputs
