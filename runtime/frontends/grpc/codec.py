"""gRPC messages <-> Trident's types: ModelInferRequest -> InferenceRequest, and
InferenceResponse -> ModelInferResponse metadata (wire.py adds the tensor bytes).

This is the gRPC frontend's hot path, so it does as little Python per request as it can:
inputs from `raw_input_contents` become `np.frombuffer` views of the request's bytes (no copy),
and every size a client declares is checked against the bytes it actually sent before anything
is allocated for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trident.runtime.core.model_versions import parse_model_version
from trident.runtime.core.parameters import (
    apply_request_parameters,
    check_shared_memory_size,
    input_parameters,
    requested_output,
)
from trident.runtime.errors import InternalError, InvalidArgumentError
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.types import (
    DATATYPE_TO_NUMPY,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    deserialize_bytes_tensor,
)

#: Request parameter that asks for the flag-only final response of a decoupled model to be
#: sent on the stream (Triton's `triton_enable_empty_final_response`).
ENABLE_EMPTY_FINAL = "triton_enable_empty_final_response"
#: Response parameter on every streamed response: is this the request's last response?
FINAL_RESPONSE = "triton_final_response"
#: The `triton_` request parameters a client may send; any other `triton_` key is rejected.
RESERVED_TRITON_PARAMETERS = (ENABLE_EMPTY_FINAL,)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1

#: InferTensorContents field that carries each datatype (FP16 and BF16 have none: they can only
#: travel as raw bytes). Small integer types ride in the 32-bit fields, as in Triton.
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: The datatype each contents field natively holds (for error messages, as Triton words them).
_FIELD_DATATYPE: dict[str, str] = {
    "bool_contents": "BOOL",
    "int_contents": "INT32",
    "int64_contents": "INT64",
    "uint_contents": "UINT32",
    "uint64_contents": "UINT64",
    "fp32_contents": "FP32",
    "fp64_contents": "FP64",
    "bytes_contents": "BYTES",
}
_CONTENTS_FIELDS = tuple(_FIELD_DATATYPE)

_ModelInferResponse = gs.ModelInferResponse
_ModelStreamInferResponse = gs.ModelStreamInferResponse


# -------------------------------------------------------------------------------- parameters


def set_parameter(target: gs.InferParameter, key: str, value: Any) -> None:
    """Store a Python value in an InferParameter, choosing the member by the value's type."""
    if isinstance(value, (bool, np.bool_)):
        target.bool_param = bool(value)
    elif isinstance(value, (int, np.integer)):
        number = int(value)
        if _INT64_MIN <= number <= _INT64_MAX:
            target.int64_param = number
        elif 0 <= number <= _UINT64_MAX:
            target.uint64_param = number
        else:
            raise InternalError(f"response parameter '{key}' = {number} does not fit in 64 bits")
    elif isinstance(value, (float, np.floating)):
        target.double_param = float(value)
    elif isinstance(value, str):
        target.string_param = value
    elif isinstance(value, (bytes, bytearray)):
        target.string_param = bytes(value).decode("utf-8", errors="replace")
    else:
        target.string_param = str(value)


def set_parameters(target: Any, parameters: Mapping[str, Any]) -> None:
    """Copy a dict of Python values into a protobuf map of InferParameter."""
    for key, value in parameters.items():
        set_parameter(target[key], key, value)


def plain_parameters(parameters: Mapping[str, gs.InferParameter]) -> dict[str, object]:
    """A protobuf map of InferParameter as plain Python values, for core/parameters.py's
    rules: each the value of the member that is set, None when none is."""
    plain: dict[str, object] = {}
    for key, param in parameters.items():
        choice = param.WhichOneof("parameter_choice")
        plain[key] = None if choice is None else getattr(param, choice)
    return plain


# -------------------------------------------------------------------------------- requests


def _element_count(shape: tuple[int, ...], name: str) -> int:
    count = 1
    for dim in shape:
        if dim < 0:
            raise InvalidArgumentError(
                f"input '{name}' has shape {list(shape)}: dimensions must not be negative"
            )
        count *= dim
    return count


def _from_raw(
    buffer: bytes | memoryview, tensor: Tensor, count: int, dtype: np.dtype, model: str
) -> None:
    if tensor.datatype == "BYTES":
        # Every element needs at least its 4-byte length: check before allocating `count` slots.
        if count * 4 > len(buffer):
            raise InvalidArgumentError(
                f"input '{tensor.name}' for model '{model}' has shape {list(tensor.shape)} "
                f"({count} BYTES elements) but only {len(buffer)} bytes of data"
            )
        tensor.data = deserialize_bytes_tensor(buffer, count).reshape(tensor.shape)
        return
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidArgumentError(
            f"unexpected total byte size {len(buffer)} for input '{tensor.name}' of model "
            f"'{model}': shape {list(tensor.shape)} of {tensor.datatype} needs {expected} bytes"
        )
    # A read-only view of the request's bytes: the model gets them without a copy.
    tensor.data = np.frombuffer(buffer, dtype=dtype).reshape(tensor.shape)


def _from_contents(
    contents: gs.InferTensorContents, tensor: Tensor, count: int, dtype: np.dtype, model: str
) -> None:
    present = [name for name in _CONTENTS_FIELDS if len(getattr(contents, name))]
    expected_field = _CONTENTS_FIELD.get(tensor.datatype)
    if not present:
        if count == 0:
            tensor.data = np.empty(tensor.shape, dtype=dtype)
            return
        raise InvalidArgumentError(
            f"unable to find data for input tensor '{tensor.name}' for model '{model}' in "
            "request: its 'contents' are empty"
        )
    if expected_field is None:
        raise InvalidArgumentError(
            f"input '{tensor.name}' for model '{model}' is {tensor.datatype}, which has no "
            "typed 'contents' field: send it in raw_input_contents"
        )
    if present != [expected_field]:
        wrong = next((name for name in present if name != expected_field), present[0])
        raise InvalidArgumentError(
            f"unexpected explicit tensor data for input tensor '{tensor.name}' for model "
            f"'{model}' of type '{_FIELD_DATATYPE[wrong]}', expected datatype "
            f"'{tensor.datatype}'"
        )
    values = getattr(contents, expected_field)
    if len(values) != count:
        raise InvalidArgumentError(
            f"input '{tensor.name}' for model '{model}' has shape {list(tensor.shape)} "
            f"({count} elements) but its contents hold {len(values)} elements"
        )
    if tensor.datatype == "BYTES":
        array = np.empty(count, dtype=np.object_)
        array[:] = list(values)
    elif expected_field in ("int_contents", "uint_contents") and dtype.itemsize < 4:
        # Triton keeps the low bytes of each 32-bit value for 8- and 16-bit types.
        wide = np.uint32 if expected_field == "uint_contents" else np.int32
        array = np.array(values, dtype=wide).astype(dtype)
    else:
        array = np.array(values, dtype=dtype)
    tensor.data = array.reshape(tensor.shape)


def decode_infer_request(
    msg: gs.ModelInferRequest, raw: Sequence[bytes | memoryview] | None = None
) -> InferenceRequest:
    """Translate a ModelInferRequest. Raises InvalidArgumentError for malformed requests.

    Inputs come from `raw_input_contents` (in input order, skipping inputs that are in shared
    memory), from each input's typed `contents`, or from shared memory (left for the core to
    read: `data` stays None and `shared_memory` says where). `raw` overrides the message's own
    raw_input_contents when wire.py has cut them out of the request bytes.
    """
    model = msg.model_name
    version = msg.model_version
    request = InferenceRequest(
        model_name=model,
        model_version=parse_model_version(version),
        id=msg.id,
    )
    if msg.parameters:
        apply_request_parameters(
            request, plain_parameters(msg.parameters), RESERVED_TRITON_PARAMETERS
        )

    if raw is None:
        raw = msg.raw_input_contents
    raw_count = len(raw)
    raw_index = 0
    inputs = request.inputs
    for tensor_msg in msg.inputs:
        name = tensor_msg.name
        datatype = tensor_msg.datatype
        dtype = DATATYPE_TO_NUMPY.get(datatype)
        if dtype is None:
            raise InvalidArgumentError(
                f"invalid datatype '{datatype}' for input '{name}' of model '{model}'"
            )
        shape = tuple(tensor_msg.shape[:])
        count = _element_count(shape, name)
        tensor = Tensor(name, datatype, shape)
        inputs.append(tensor)
        if tensor_msg.parameters:
            # binary_data_size is HTTP's: gRPC bytes come in raw_input_contents.
            _, ref, tensor.parameters = input_parameters(
                name, plain_parameters(tensor_msg.parameters)
            )
            if ref is not None:
                if tensor_msg.HasField("contents"):
                    raise InvalidArgumentError(
                        "unexpected 'content' provided when using shared memory for input "
                        f"tensor '{name}' for model '{model}'"
                    )
                check_shared_memory_size(
                    name, datatype, shape, count, dtype.itemsize, ref.byte_size
                )
                tensor.shared_memory = ref
                continue
        if tensor_msg.HasField("contents"):
            if raw_count:
                raise InvalidArgumentError(
                    "contents field must not be specified when using raw_input_contents for "
                    f"'{name}' for model '{model}'"
                )
            _from_contents(tensor_msg.contents, tensor, count, dtype, model)
        elif raw_index < raw_count:
            _from_raw(raw[raw_index], tensor, count, dtype, model)
            raw_index += 1
        else:
            raise InvalidArgumentError(
                f"unable to find data for input tensor '{name}' for model '{model}' in request."
            )
    if raw_index != raw_count:
        raise InvalidArgumentError(
            f"request for model '{model}' carries {raw_count} raw_input_contents but only "
            f"{raw_index} inputs take their data from them"
        )

    for output_msg in msg.outputs:
        if output_msg.parameters:
            requested = requested_output(output_msg.name, plain_parameters(output_msg.parameters))
        else:
            requested = RequestedOutput(output_msg.name)
        request.outputs.append(requested)
    return request


def wants_empty_final_response(msg: gs.ModelInferRequest) -> bool:
    """Did the client ask to receive a decoupled model's flag-only final response?"""
    parameters = msg.parameters
    if ENABLE_EMPTY_FINAL not in parameters:
        return False
    param = parameters[ENABLE_EMPTY_FINAL]
    return param.WhichOneof("parameter_choice") == "bool_param" and param.bool_param


# -------------------------------------------------------------------------------- responses


def encode_infer_metadata(response: InferenceResponse) -> gs.ModelInferResponse:
    """A ModelInferResponse with everything but the tensor bytes: names, datatypes, shapes and
    parameters. wire.py appends one raw_output_contents entry per output (what tritonclient and
    perf_analyzer read) without passing the bytes through protobuf."""
    msg = _ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    outputs = msg.outputs
    for tensor in response.outputs:
        output = outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.parameters:
            set_parameters(output.parameters, tensor.parameters)
    if response.parameters:
        set_parameters(msg.parameters, response.parameters)
    return msg


def is_empty_final(response: InferenceResponse) -> bool:
    """A decoupled model's flag-only "I am done" response: final, with nothing in it."""
    return (
        response.final
        and response.error is None
        and not response.outputs
        and not response.parameters
    )


def encode_stream_error(
    message: str,
    request_id: str,
    model_name: str = "",
    model_version: str = "",
    final: bool | None = None,
) -> gs.ModelStreamInferResponse:
    """An error for one request on a stream: the stream itself goes on. The response carries
    the request's id so the client knows which request failed; an error the model reported
    mid-stream (`final` given) also says whether more responses follow."""
    infer_response = _ModelInferResponse(
        id=request_id, model_name=model_name, model_version=model_version
    )
    if final is not None:
        infer_response.parameters[FINAL_RESPONSE].bool_param = final
    return _ModelStreamInferResponse(error_message=message, infer_response=infer_response)
