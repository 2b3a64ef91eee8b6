"""Wire codec of the generate extension (/generate and /generate_stream).

A generate body is a flat JSON object: fields named like the model's inputs become tensors
(strings BYTES, numbers the input's datatype, shaped by Triton's padding rule), the members of a
"parameters" object are treated the same way, and every other field is a request parameter.
A response is a flat object too: id, model name and version, response parameters, and each
output by name, single-element outputs as scalars.
"""

from __future__ import annotations

from typing import Any

from trident.runtime.core.model_queries import ModelMetadata, TensorMetadata
from trident.runtime.core.parameters import apply_request_parameters
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

from . import codec


def decode_generate_request(
    model_name: str,
    model_version: int,
    body: bytes,
    metadata: ModelMetadata,
    max_json_depth: int = codec.DEFAULT_MAX_JSON_DEPTH,
) -> InferenceRequest:
    """Map a generate body's fields onto the model's inputs by name; other fields (and the
    members of a "parameters" object) become request parameters."""
    document = codec.parse_json_object(body, "generate request", max_json_depth)
    inputs = {tensor.name: tensor for tensor in metadata.inputs}
    request = InferenceRequest(model_name=model_name, model_version=model_version)
    parameters: dict[str, Any] = {}
    for key, value in document.items():
        if key in inputs:
            request.inputs.append(_generate_input(inputs[key], value))
        elif key == "id":
            request.id = codec.expect_string(value, "id")
        elif key == "parameters":
            for name, member in codec.expect_object(value, "parameters").items():
                if name in inputs:
                    request.inputs.append(_generate_input(inputs[name], member))
                else:
                    parameters[name] = member
        else:
            parameters[key] = value
    # binary_data_output has no meaning here: generate responses are JSON.
    apply_request_parameters(request, parameters)
    return request


def _generate_input(metadata: TensorMetadata, value: Any) -> Tensor:
    name = metadata.name
    datatype = metadata.datatype
    values = value if isinstance(value, list) else [value]
    if any(isinstance(item, (list, dict)) for item in values) or isinstance(value, dict):
        raise InvalidArgumentError(
            f"generate field '{name}' must be a single value or a flat list of values"
        )
    shape = generate_shape(name, list(metadata.shape), len(values))
    data = codec.tensor_from_json(name, datatype, shape, values)
    return Tensor(name=name, datatype=datatype, shape=shape, data=data)


def generate_shape(name: str, dims: list[int], count: int) -> tuple[int, ...]:
    """Fit `count` elements into the model's input shape: fixed dims take their share, the
    innermost variable dim takes the rest, other variable dims become 1 (Triton's rule)."""
    remaining = count
    for dim in reversed(dims):
        if dim != -1:
            if dim == 0 or remaining % dim:
                raise InvalidArgumentError(
                    f"The schema can not convert input '{name}' to tensor with proper shape"
                )
            remaining //= dim
    shape = list(dims)
    for index in range(len(shape) - 1, -1, -1):
        if shape[index] == -1:
            shape[index] = remaining
            remaining = 1
    if remaining != 1:
        raise InvalidArgumentError(
            f"The schema can not convert input '{name}' to tensor with proper shape"
        )
    return tuple(shape)


def encode_generate_response(response: InferenceResponse) -> bytes:
    """{"id"?, "model_name", "model_version", <parameters>..., <output>: value-or-list}, keys
    sorted as Triton emits them; single-element outputs become scalars."""
    document: dict[str, Any] = {}
    if response.id:
        document["id"] = response.id
    document["model_name"] = response.model_name
    document["model_version"] = response.model_version
    document.update(response.parameters)
    for tensor in response.outputs:
        if tensor.data is None:
            continue
        values = codec.json_values(tensor)
        document[tensor.name] = values[0] if len(values) == 1 else values
    return codec.dumps(dict(sorted(document.items())))
