"""The rules for the `parameters` of a request, of its inputs and of its requested outputs, once
for every frontend.

Each codec turns its wire form into plain Python values (JSON values as parsed; a protobuf
`InferParameter` as the value of whichever member is set, None when none is) and calls the
functions here, which check types, ranges and combinations and word every refusal the same way
on HTTP and gRPC. The rules (listed in docs/protocol.md):

Request parameters
- `sequence_id`: a non-negative integer or a string; `sequence_start`, `sequence_end`: booleans;
  `priority`, `timeout` (microseconds): non-negative integers. These set InferenceRequest fields.
- `binary_data_output`: a boolean, HTTP's default for returning outputs as binary data.
- Keys starting with `triton_` are Triton's: refused, except those the frontend allows (the gRPC
  stream's `triton_enable_empty_final_response`), which must be booleans and never reach the
  model.
- Any other key reaches the model (`request.parameters()`) when its value is a boolean, an
  integer that fits in 64 bits, a float or a string.

Input and output parameters
- `shared_memory_region` (a string) puts the tensor in shared memory; `shared_memory_byte_size`
  and `shared_memory_offset` are non-negative integers, 0 when not given, and ignored without a
  region (as Triton does).
- Inputs: `binary_data_size`, a non-negative integer (HTTP's binary tensor extension).
- Outputs: `binary_data` (a boolean) and `classification` (a non-negative integer); neither goes
  with `shared_memory_region`.
- Other keys travel with the tensor, under the same value rule as request parameters.

Integers are at most 2**64 - 1 (the protocol's widest integer field): a JSON number past that is
refused rather than carried on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import InferenceRequest, RequestedOutput, SharedMemoryRef

#: A parameter value that can reach a model.
ParameterValue = bool | int | float | str

SEQUENCE_ID = "sequence_id"
SEQUENCE_START = "sequence_start"
SEQUENCE_END = "sequence_end"
PRIORITY = "priority"
TIMEOUT = "timeout"
BINARY_DATA_OUTPUT = "binary_data_output"
BINARY_DATA = "binary_data"
BINARY_DATA_SIZE = "binary_data_size"
CLASSIFICATION = "classification"
SHARED_MEMORY_REGION = "shared_memory_region"
SHARED_MEMORY_OFFSET = "shared_memory_offset"
SHARED_MEMORY_BYTE_SIZE = "shared_memory_byte_size"
#: Request parameter keys with this prefix are Triton's own.
TRITON_PREFIX = "triton_"

#: Request parameters that set InferenceRequest fields (or the HTTP output default).
RESERVED_REQUEST_PARAMETERS = frozenset(
    (SEQUENCE_ID, SEQUENCE_START, SEQUENCE_END, PRIORITY, TIMEOUT, BINARY_DATA_OUTPUT)
)
_SHARED_MEMORY_KEYS = frozenset(
    (SHARED_MEMORY_REGION, SHARED_MEMORY_OFFSET, SHARED_MEMORY_BYTE_SIZE)
)
#: Input and output parameters these rules consume; the others travel with the tensor.
INPUT_PARAMETERS = _SHARED_MEMORY_KEYS | {BINARY_DATA_SIZE}
OUTPUT_PARAMETERS = _SHARED_MEMORY_KEYS | {BINARY_DATA, CLASSIFICATION}

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


class InputParameters(NamedTuple):
    """What an input's parameters say."""

    #: HTTP: the size of the input's binary data after the JSON header (None: not binary).
    binary_data_size: int | None
    #: Where the input's bytes are, when they are in shared memory.
    shared_memory: SharedMemoryRef | None
    #: Everything else, for the model.
    others: dict[str, ParameterValue]


# -------------------------------------------------------------------------------- requests


def apply_request_parameters(
    request: InferenceRequest,
    parameters: Mapping[str, object],
    allowed_triton_keys: Collection[str] = (),
) -> bool | None:
    """Apply a request's parameters to `request`: the reserved keys set its fields, the others
    land in `request.parameters`. Returns `binary_data_output` when the request gives it, else
    None. `allowed_triton_keys` are the `triton_` keys the frontend reads itself."""
    binary_data_output: bool | None = None
    custom = request.parameters
    for key, value in parameters.items():
        if key == SEQUENCE_ID:
            request.sequence_id = (
                value if isinstance(value, str) else _unsigned(key, value, "", "or a string")
            )
        elif key == SEQUENCE_START:
            request.sequence_start = _boolean(key, value)
        elif key == SEQUENCE_END:
            request.sequence_end = _boolean(key, value)
        elif key == PRIORITY:
            request.priority = _unsigned(key, value)
        elif key == TIMEOUT:
            request.timeout_us = _unsigned(key, value)
        elif key == BINARY_DATA_OUTPUT:
            binary_data_output = _boolean(key, value)
        elif key.startswith(TRITON_PREFIX):
            if key not in allowed_triton_keys:
                raise _reserved_key_error(allowed_triton_keys)
            _boolean(key, value)  # read by the frontend; never reaches the model
        else:
            custom[key] = custom_value(key, value)
    return binary_data_output


def custom_value(key: str, value: object, where: str = "") -> ParameterValue:
    """`value` if it may reach a model (a boolean, a 64-bit integer, a float or a string)."""
    if isinstance(value, (str, float)):
        return value
    if isinstance(value, int) and (isinstance(value, bool) or _INT64_MIN <= value <= _UINT64_MAX):
        return value
    raise InvalidArgumentError(
        f"parameter '{key}'{where} has invalid type. It should be either 'int', 'bool', "
        "'double' or 'string'."
    )


def _reserved_key_error(allowed: Collection[str]) -> InvalidArgumentError:
    if not allowed:
        return InvalidArgumentError(
            "parameter keys starting with 'triton_' are reserved for Triton usage and should "
            "not be specified."
        )
    return InvalidArgumentError(
        "parameter keys starting with 'triton_' are reserved for Triton usage. Only the "
        "following keys starting with 'triton_' are allowed: " + " ".join(sorted(allowed))
    )


# -------------------------------------------------------------------------------- tensors


def input_parameters(name: str, parameters: Mapping[str, object]) -> InputParameters:
    """Read an input's parameters (`name` is the input's, for messages)."""
    where = f" of input '{name}'"
    binary_data_size = None
    if BINARY_DATA_SIZE in parameters:
        binary_data_size = _unsigned(BINARY_DATA_SIZE, parameters[BINARY_DATA_SIZE], where)
    return InputParameters(
        binary_data_size,
        _shared_memory(parameters, where),
        _others(parameters, INPUT_PARAMETERS, where),
    )


def requested_output(name: str, parameters: Mapping[str, object]) -> RequestedOutput:
    """A RequestedOutput from an output's name and parameters."""
    requested = RequestedOutput(name)
    if not parameters:
        return requested
    where = f" of output '{name}'"
    if BINARY_DATA in parameters:
        requested.binary = _boolean(BINARY_DATA, parameters[BINARY_DATA], where)
    if CLASSIFICATION in parameters:
        requested.classification = _unsigned(CLASSIFICATION, parameters[CLASSIFICATION], where)
    if SHARED_MEMORY_REGION in parameters:
        # Triton's messages: the bytes go to the region, so they cannot also be class strings
        # or binary data after the JSON.
        if CLASSIFICATION in parameters:
            raise InvalidArgumentError(
                "Output can't set both 'shared_memory_region' and 'classification'"
            )
        if requested.binary:
            raise InvalidArgumentError(
                "Output can't set both 'shared_memory_region' and 'binary_data'"
            )
        requested.shared_memory = _shared_memory(parameters, where)
    requested.parameters = _others(parameters, OUTPUT_PARAMETERS, where)
    return requested


def check_shared_memory_size(
    name: str, datatype: str, shape: tuple[int, ...], count: int, itemsize: int, byte_size: int
) -> None:
    """Refuse an input whose shape (`count` elements of `itemsize` bytes; 0 for BYTES) the
    region's byte size cannot back, before any layer reads (and allocates) from it."""
    if datatype == "BYTES":
        # Every BYTES element carries at least its 4-byte length.
        if count * 4 > byte_size:
            raise InvalidArgumentError(
                f"input '{name}' has shape {list(shape)} ({count} BYTES elements), which needs "
                f"at least {count * 4} bytes, but shared_memory_byte_size is {byte_size}"
            )
    elif count * itemsize != byte_size:
        raise InvalidArgumentError(
            f"input '{name}': shape {list(shape)} of {datatype} needs {count * itemsize} bytes "
            f"but shared_memory_byte_size is {byte_size}"
        )


def _shared_memory(parameters: Mapping[str, object], where: str) -> SharedMemoryRef | None:
    if SHARED_MEMORY_REGION not in parameters:
        return None
    region = parameters[SHARED_MEMORY_REGION]
    if not isinstance(region, str):
        raise _type_error(SHARED_MEMORY_REGION, where, "a string")
    return SharedMemoryRef(
        region,
        _unsigned(SHARED_MEMORY_BYTE_SIZE, parameters.get(SHARED_MEMORY_BYTE_SIZE, 0), where),
        _unsigned(SHARED_MEMORY_OFFSET, parameters.get(SHARED_MEMORY_OFFSET, 0), where),
    )


def _others(
    parameters: Mapping[str, object], consumed: frozenset[str], where: str
) -> dict[str, ParameterValue]:
    if consumed.issuperset(parameters):  # the usual case: nothing for the model
        return {}
    return {
        key: custom_value(key, value, where)
        for key, value in parameters.items()
        if key not in consumed
    }


# -------------------------------------------------------------------------------- values


def _boolean(key: str, value: object, where: str = "") -> bool:
    if not isinstance(value, bool):
        raise _type_error(key, where, "a boolean")
    return value


def _unsigned(key: str, value: object, where: str = "", alternative: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        expected = f"an integer {alternative}" if alternative else "an integer"
        raise _type_error(key, where, expected)
    if value < 0:
        raise InvalidArgumentError(f"invalid value for '{key}'{where}, expected value >= 0.")
    if value > _UINT64_MAX:
        raise InvalidArgumentError(
            f"invalid value for '{key}'{where}, expected value <= {_UINT64_MAX}."
        )
    return value


def _type_error(key: str, where: str, expected: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"invalid value type for '{key}' parameter{where}, expected {expected}."
    )
