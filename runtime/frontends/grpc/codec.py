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
from trident.runtime.errors import InternalError, InvalidArgumentError
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.types import (
    DATATYPE_TO_NUMPY,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    SharedMemoryRef,
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

_SHM_REGION = "shared_memory_region"
_SHM_OFFSET = "shared_memory_offset"
_SHM_BYTE_SIZE = "shared_memory_byte_size"
_SHM_KEYS = frozenset((_SHM_REGION, _SHM_OFFSET, _SHM_BYTE_SIZE))

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


def parameter_value(param: gs.InferParameter, key: str) -> bool | int | float | str:
    """The Python value an InferParameter holds (whichever member of its oneof is set)."""
    choice = param.WhichOneof("parameter_choice")
    if choice is None:
        raise InvalidArgumentError(f"parameter '{key}' has no value")
    return getattr(param, choice)


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


def _bool_parameter(param: gs.InferParameter, key: str) -> bool:
    if param.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidArgumentError(
            f"invalid value type for '{key}' parameter, expected bool_param."
        )
    return param.bool_param


def _apply_request_parameters(request: InferenceRequest, parameters: Any) -> None:
    """Reserved keys become InferenceRequest fields; other keys go to `request.parameters`."""
    for key, param in parameters.items():
        choice = param.WhichOneof("parameter_choice")
        if key == "sequence_id":
            if choice == "string_param":
                request.sequence_id = param.string_param
            elif choice in ("int64_param", "uint64_param"):
                request.sequence_id = getattr(param, choice)
            else:
                raise InvalidArgumentError(
                    "invalid value type for 'sequence_id' parameter, expected int64_param or "
                    "string_param."
                )
        elif key == "sequence_start":
            request.sequence_start = _bool_parameter(param, key)
        elif key == "sequence_end":
            request.sequence_end = _bool_parameter(param, key)
        elif key == "priority":
            if choice not in ("int64_param", "uint64_param"):
                raise InvalidArgumentError(
                    "invalid value type for 'priority' parameter, expected int64_param or "
                    "uint64_param."
                )
            priority = getattr(param, choice)
            if priority < 0:
                raise InvalidArgumentError("invalid value for 'priority', expected value >= 0.")
            request.priority = priority
        elif key == "timeout":
            if choice != "int64_param":
                raise InvalidArgumentError(
                    "invalid value type for 'timeout' parameter, expected int64_param."
                )
            if param.int64_param < 0:
                raise InvalidArgumentError("invalid value for 'timeout', expected value >= 0.")
            request.timeout_us = param.int64_param
        elif key.startswith("triton_"):
            if key not in RESERVED_TRITON_PARAMETERS:
                raise InvalidArgumentError(
                    "parameter keys starting with 'triton_' are reserved for Triton usage. Only "
                    "the following keys starting with 'triton_' are allowed: "
                    + " ".join(RESERVED_TRITON_PARAMETERS)
                )
            _bool_parameter(param, key)  # read by the stream handler; never reaches the model
        else:
            if choice is None:
                raise InvalidArgumentError(f"parameter '{key}' has no value")
            request.parameters[key] = getattr(param, choice)


def _split_tensor_parameters(
    parameters: Any, tensor_kind: str, tensor_name: str
) -> tuple[SharedMemoryRef | None, dict[str, Any]]:
    """Shared-memory parameters -> SharedMemoryRef; the others -> a dict of Python values."""
    region = ""
    offset = 0
    byte_size: int | None = None
    others: dict[str, Any] = {}
    for key, param in parameters.items():
        if key not in _SHM_KEYS:
            others[key] = parameter_value(param, key)
            continue
        choice = param.WhichOneof("parameter_choice")
        if key == _SHM_REGION:
            if choice != "string_param":
                raise InvalidArgumentError(
                    f"invalid value type for '{key}' of {tensor_kind} '{tensor_name}', "
                    "expected string_param."
                )
            region = param.string_param
        else:
            if choice not in ("int64_param", "uint64_param"):
                raise InvalidArgumentError(
                    f"invalid value type for '{key}' of {tensor_kind} '{tensor_name}', "
                    "expected int64_param."
                )
            value = getattr(param, choice)
            if value < 0:
                raise InvalidArgumentError(
                    f"'{key}' of {tensor_kind} '{tensor_name}' must not be negative"
                )
            if key == _SHM_OFFSET:
                offset = value
            else:
                byte_size = value
    if not region:
        if byte_size is not None or offset:
            raise InvalidArgumentError(
                f"{tensor_kind} '{tensor_name}' gives a shared-memory offset or byte size but "
                f"no '{_SHM_REGION}'"
            )
        return None, others
    if byte_size is None:
        raise InvalidArgumentError(
            f"{tensor_kind} '{tensor_name}' names shared-memory region '{region}' but no "
            f"'{_SHM_BYTE_SIZE}'"
        )
    return SharedMemoryRef(region, byte_size, offset), others


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
        _apply_request_parameters(request, msg.parameters)

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
            ref, tensor.parameters = _split_tensor_parameters(tensor_msg.parameters, "input", name)
            if ref is not None:
                if tensor_msg.HasField("contents"):
                    raise InvalidArgumentError(
                        "unexpected 'content' provided when using shared memory for input "
                        f"tensor '{name}' for model '{model}'"
                    )
                _check_shared_memory_size(tensor, ref, count, dtype)
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
        requested = RequestedOutput(output_msg.name)
        if output_msg.parameters:
            ref, parameters = _split_tensor_parameters(
                output_msg.parameters, "output", output_msg.name
            )
            requested.shared_memory = ref
            classification = parameters.pop("classification", 0)
            if isinstance(classification, bool) or not isinstance(classification, int):
                raise InvalidArgumentError(
                    f"'classification' of output '{output_msg.name}' must be an integer"
                )
            if classification < 0:
                raise InvalidArgumentError(
                    f"'classification' of output '{output_msg.name}' must not be negative"
                )
            requested.classification = classification
            requested.parameters = parameters
        request.outputs.append(requested)
    return request


def _check_shared_memory_size(
    tensor: Tensor, ref: SharedMemoryRef, count: int, dtype: np.dtype
) -> None:
    """Refuse a declared shape that the region's byte size cannot hold, before the core reads
    (and allocates) anything."""
    if tensor.datatype == "BYTES":
        if count * 4 > ref.byte_size:
            raise InvalidArgumentError(
                f"input '{tensor.name}' has shape {list(tensor.shape)} ({count} BYTES elements) "
                f"but shared_memory_byte_size is only {ref.byte_size}"
            )
    elif count * dtype.itemsize != ref.byte_size:
        raise InvalidArgumentError(
            f"input '{tensor.name}': shape {list(tensor.shape)} of {tensor.datatype} needs "
            f"{count * dtype.itemsize} bytes but shared_memory_byte_size is {ref.byte_size}"
        )


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
