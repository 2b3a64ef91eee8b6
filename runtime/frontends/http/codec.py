"""HTTP/REST wire codec: KServe v2 JSON (+ Triton's binary tensor extension) <-> runtime types.

Decoding turns a request body into an `InferenceRequest` whose tensors are numpy arrays (views
over the body for binary inputs where alignment allows). Encoding turns an `InferenceResponse`
into a JSON document, optionally followed by raw output bytes. Nothing here knows about models
beyond the metadata a handler passes in, and nothing here touches sockets.

Every size a client declares is checked against the bytes that actually arrived before anything
is allocated from it, so a shape of [2**40] costs a 400, not the server's memory.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trident.runtime.core.json_depth import DEFAULT_MAX_JSON_DEPTH, check_json_depth
from trident.runtime.core.model_overrides import FILE_PREFIX, LoadRequestLimits
from trident.runtime.core.parameters import (
    apply_request_parameters,
    check_shared_memory_size,
    input_parameters,
    requested_output,
)
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import (
    CONFIG_TYPE_TO_DATATYPE,
    DATATYPE_SIZE,
    DATATYPE_TO_NUMPY,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    SharedMemoryRef,
    Tensor,
    deserialize_bytes_tensor,
    element_count,
    serialize_bytes_tensor,
)

#: Every BYTES element carries at least its 4-byte length prefix.
_BYTES_PREFIX_SIZE = 4
_INTEGER_KINDS = frozenset("iu")
_NUMBER_KINDS = frozenset("iuf")
_COMPACT = (",", ":")
_NO_PARAMETERS: dict[str, Any] = {}


@dataclass(slots=True)
class OutputEncoding:
    """How the client asked for the outputs of one /infer response to be returned."""

    #: For outputs the request did not name: raw bytes after the JSON (`binary_data_output`).
    default_binary: bool = False
    #: Outputs the request named, by name.
    requested: dict[str, RequestedOutput] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Small JSON helpers.


def dumps(document: Any) -> bytes:
    """Compact JSON, ASCII-only (non-ASCII text is escaped, so the bytes are always valid)."""
    return json.dumps(document, separators=_COMPACT, default=_json_default).encode("ascii")


def error_body(message: str) -> bytes:
    """The body of every HTTP error: {"error": "<message>"}."""
    return dumps({"error": message})


def parse_json(body: bytes, what: str = "request", max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Parse a JSON body; malformed JSON, or JSON nested deeper than `max_depth`
    (--http-max-json-depth), is the client's fault (400).

    Triton answers malformed JSON with 500; Trident deliberately answers 400.
    """
    check_json_depth(body, max_depth, what)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgumentError(f"failed to parse the {what} JSON buffer: {exc}") from None


def parse_json_object(
    body: bytes, what: str = "request", max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> dict[str, Any]:
    document = parse_json(body, what, max_depth)
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"the {what} JSON must be an object")
    return document


def _json_default(value: Any) -> Any:
    # Backends may put numpy scalars in response parameters.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"Unable to parse '{what}': expected a boolean, got {value!r}")
    return value


def expect_string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"Unable to parse '{what}': expected a string, got {value!r}")
    return value


def expect_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"Unable to parse '{what}': expected a JSON object")
    return value


# --------------------------------------------------------------------------------------------
# Tensors from JSON data and from binary data.


def parse_shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise InvalidArgumentError(f"Unable to parse 'shape' of input '{name}': expected a list")
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidArgumentError(
                f"Unable to parse 'shape' of input '{name}': dimensions must be non-negative "
                f"integers, got {value}"
            )
    return tuple(value)


def _check_datatype(datatype: Any, name: str) -> str:
    if not isinstance(datatype, str) or datatype not in DATATYPE_TO_NUMPY:
        raise InvalidArgumentError(f"invalid datatype {datatype!r} for input '{name}'")
    return datatype


def _shape_mismatch(name: str, shape: tuple[int, ...], count: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"Unable to parse 'data' of input '{name}': shape {list(shape)} holds "
        f"{element_count(shape)} elements but 'data' has {count}"
    )


def _flatten_strings(data: Any, name: str, out: list[bytes]) -> None:
    if isinstance(data, list):
        for item in data:
            _flatten_strings(item, name, out)
    elif isinstance(data, str):
        out.append(data.encode("utf-8"))
    else:
        raise InvalidArgumentError(
            f"Unable to parse 'data' of BYTES input '{name}': elements must be strings, "
            f"got {data!r}"
        )


def tensor_from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """Convert JSON `data` (nested or flat, row-major) into an array of `shape`."""
    count = element_count(shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        _flatten_strings(data, name, items)
        if len(items) != count:
            raise _shape_mismatch(name, shape, len(items))
        array = np.empty(count, dtype=np.object_)
        array[:] = items
        return array.reshape(shape)
    if not isinstance(data, list):
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': expected a list")
    try:
        values = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgumentError(
            f"Unable to parse 'data' of input '{name}': expected a regular nested list of "
            f"{datatype} values"
        ) from None
    if values.size != count:
        raise _shape_mismatch(name, shape, values.size)
    if count:
        _check_json_values(values, name, datatype)
    if datatype == "BF16":
        return _float32_to_bf16(values.astype(np.float32)).reshape(shape)
    return values.astype(DATATYPE_TO_NUMPY[datatype], copy=False).reshape(shape)


def _check_json_values(values: np.ndarray, name: str, datatype: str) -> None:
    kind = values.dtype.kind
    if datatype == "BOOL":
        ok = kind == "b"
    elif datatype in ("FP16", "FP32", "FP64", "BF16"):
        ok = kind in _NUMBER_KINDS
    else:
        ok = kind in _INTEGER_KINDS
        if ok:
            limits = np.iinfo(DATATYPE_TO_NUMPY[datatype])
            if values.min() < limits.min or values.max() > limits.max:
                raise InvalidArgumentError(
                    f"Unable to parse 'data' of input '{name}': values must lie in "
                    f"[{limits.min}, {limits.max}] for {datatype}"
                )
    if not ok:
        raise InvalidArgumentError(
            f"Unable to parse 'data' of input '{name}': {datatype} data must hold only "
            f"{'booleans' if datatype == 'BOOL' else 'numbers'} of that type"
        )


def _float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 words (round to nearest even), as uint16."""
    words = values.view(np.uint32).astype(np.uint64)
    rounded = (words + 0x7FFF + ((words >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def _bf16_to_float32(words: np.ndarray) -> np.ndarray:
    return (words.astype(np.uint32) << 16).view(np.float32)


def tensor_from_binary(
    name: str, datatype: str, shape: tuple[int, ...], buffer: bytes, offset: int, size: int
) -> np.ndarray:
    """Wrap `size` bytes of `buffer` at `offset` as a tensor of `shape` (no copy when aligned)."""
    count = element_count(shape)
    if datatype == "BYTES":
        if count * _BYTES_PREFIX_SIZE > size:
            raise InvalidArgumentError(
                f"input '{name}': shape {list(shape)} needs at least "
                f"{count * _BYTES_PREFIX_SIZE} bytes of BYTES data but {size} were sent"
            )
        view = memoryview(buffer)[offset : offset + size]
        return deserialize_bytes_tensor(view, count).reshape(shape)
    expected = count * DATATYPE_SIZE[datatype]
    if expected != size:
        raise InvalidArgumentError(
            f"unexpected total byte size {size} for input '{name}', expecting {expected} "
            f"for shape {list(shape)} of {datatype}"
        )
    dtype = DATATYPE_TO_NUMPY[datatype]
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    if not array.flags.aligned:
        # Binary data follows a JSON header of any length; backends (torch, onnxruntime)
        # expect aligned arrays, so pay one copy here rather than a failure there.
        array = array.copy()
    return array.reshape(shape)


# --------------------------------------------------------------------------------------------
# /infer requests.


def decode_infer_request(
    model_name: str,
    model_version: int,
    body: bytes,
    header_length: int | None,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> tuple[InferenceRequest, OutputEncoding]:
    """Decode an /infer body: JSON, or JSON of `header_length` bytes followed by binary tensors."""
    header = body if header_length is None else body[:header_length]
    document = parse_json_object(header, "request", max_json_depth)
    request = InferenceRequest(model_name=model_name, model_version=model_version)
    encoding = OutputEncoding()

    if "id" in document:
        request.id = expect_string(document["id"], "id")
    if "parameters" in document:
        binary = apply_request_parameters(
            request, expect_object(document["parameters"], "parameters")
        )
        if binary is not None:
            encoding.default_binary = binary

    inputs = document.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidArgumentError("Unable to parse 'inputs': expected a list of input tensors")
    offset = 0 if header_length is None else header_length
    for item in inputs:
        tensor, offset = _decode_input(item, body, offset, header_length, model_name)
        request.inputs.append(tensor)
    if header_length is not None and offset != len(body):
        raise InvalidArgumentError(f"unexpected additional input data for model '{model_name}'")

    if "outputs" in document:
        outputs = document["outputs"]
        if not isinstance(outputs, list):
            raise InvalidArgumentError("Unable to parse 'outputs': expected a list")
        for item in outputs:
            requested = _decode_output(item)
            request.outputs.append(requested)
            encoding.requested[requested.name] = requested
    return request, encoding


def _decode_input(
    item: Any, body: bytes, offset: int, header_length: int | None, model_name: str
) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise InvalidArgumentError("Unable to parse 'inputs': each input must be a JSON object")
    name = expect_string(item.get("name"), "name")
    datatype = _check_datatype(item.get("datatype"), name)
    shape = parse_shape(item.get("shape"), name)
    parameters = item.get("parameters", _NO_PARAMETERS)
    if parameters is not _NO_PARAMETERS:
        expect_object(parameters, f"parameters of input '{name}'")

    has_data = "data" in item
    has_binary = "binary_data_size" in parameters
    has_shm = "shared_memory_region" in parameters
    if has_data + has_binary + has_shm != 1:
        given = [
            label
            for label, present in (
                ("'data'", has_data),
                ("'binary_data_size'", has_binary),
                ("'shared_memory_region'", has_shm),
            )
            if present
        ]
        raise InvalidArgumentError(
            f"Input '{name}' must set only one of the following fields: 'data', "
            "'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But "
            + ("set " + " ".join(given) if given else "no field is set")
        )

    tensor = Tensor(name=name, datatype=datatype, shape=shape)
    binary_data_size: int | None = None
    shared_memory: SharedMemoryRef | None = None
    if parameters:
        binary_data_size, shared_memory, tensor.parameters = input_parameters(name, parameters)

    if has_data:
        # Unlike Triton, FP16 and BF16 are accepted as JSON numbers (converted here).
        tensor.data = tensor_from_json(name, datatype, shape, item["data"])
    elif binary_data_size is not None:
        if header_length is None:
            raise InvalidArgumentError(
                "must specify valid 'Inference-Header-Content-Length' in request header and "
                "'binary_data_size' when passing inputs in binary data format"
            )
        end = offset + binary_data_size
        if end > len(body):
            raise InvalidArgumentError(
                f"unexpected size for input '{name}', expecting {end - len(body)} additional "
                f"bytes for model '{model_name}'"
            )
        tensor.data = tensor_from_binary(name, datatype, shape, body, offset, binary_data_size)
        offset = end
    elif shared_memory is not None:
        check_shared_memory_size(
            name,
            datatype,
            shape,
            element_count(shape),
            DATATYPE_SIZE.get(datatype, 0),
            shared_memory.byte_size,
        )
        tensor.shared_memory = shared_memory
    return tensor, offset


def _decode_output(item: Any) -> RequestedOutput:
    if not isinstance(item, dict):
        raise InvalidArgumentError("Unable to parse 'outputs': each output must be a JSON object")
    name = expect_string(item.get("name"), "name")
    parameters = item.get("parameters")
    if parameters:
        requested = requested_output(
            name, expect_object(parameters, f"parameters of output '{name}'")
        )
    else:
        requested = RequestedOutput(name=name)
    if requested.binary is None:
        requested.binary = False  # a named output is JSON unless it asks for binary_data
    return requested


def decode_raw_request(
    model_name: str, model_version: int, body: bytes, config: mc.ModelConfig
) -> tuple[InferenceRequest, OutputEncoding]:
    """`Inference-Header-Content-Length: 0`: the whole body is the model's only input, batch 1.

    Datatype and shape come from the model configuration, as Triton deduces them.
    """
    if len(config.input) != 1:
        raise InvalidArgumentError(
            f"Raw request must only have 1 input (found 1) to be deduced but got "
            f"{len(config.input)} inputs in '{model_name}' model configuration"
        )
    config_input = config.input[0]
    datatype = CONFIG_TYPE_TO_DATATYPE.get(mc.DataType.Name(config_input.data_type), "")
    if datatype not in DATATYPE_TO_NUMPY:
        raise InvalidArgumentError(f"raw input '{config_input.name}' has no usable datatype")
    shape = [1] if config.max_batch_size > 0 else []
    dynamic_axis = -1
    fixed_count = 1
    for dim in config_input.dims:
        if dim == -1:
            if dynamic_axis != -1:
                raise InvalidArgumentError(
                    f"The shape of the raw input '{config_input.name}' can not be deduced "
                    "because there are more than one variable-sized dimension"
                )
            dynamic_axis = len(shape)
        else:
            fixed_count *= dim
        shape.append(dim)

    tensor = Tensor(name=config_input.name, datatype=datatype, shape=())
    if datatype == "BYTES":
        if dynamic_axis != -1 or fixed_count != 1:
            raise InvalidArgumentError(
                f"For BYTE datatype raw input '{config_input.name}', the model must have input "
                "shape [1]"
            )
        tensor.shape = tuple(shape)
        items = np.empty(1, dtype=np.object_)
        items[0] = body
        tensor.data = items.reshape(tensor.shape)
    else:
        itemsize = DATATYPE_SIZE[datatype]
        if len(body) % itemsize:
            raise InvalidArgumentError(
                f"The input '{config_input.name}' byte size {len(body)} is not a multiple of "
                f"data type size {itemsize}"
            )
        if dynamic_axis != -1:
            shape[dynamic_axis] = (len(body) // itemsize) // max(fixed_count, 1)
        tensor.shape = tuple(shape)
        tensor.data = tensor_from_binary(
            config_input.name, datatype, tensor.shape, body, 0, len(body)
        )
    request = InferenceRequest(model_name=model_name, model_version=model_version)
    request.inputs.append(tensor)
    return request, OutputEncoding(default_binary=True)


# --------------------------------------------------------------------------------------------
# /infer responses.


def json_values(tensor: Tensor) -> list[Any]:
    """A tensor's elements as a flat JSON list (BYTES as UTF-8 strings)."""
    array = tensor.data
    assert array is not None
    flat = array.reshape(-1)
    if tensor.datatype == "BYTES":
        return [_text(item) for item in flat]
    if tensor.datatype == "BF16":
        return _bf16_to_float32(flat).tolist()
    return flat.tolist()


def _text(item: Any) -> str:
    if isinstance(item, (bytes, bytearray, memoryview)):
        # JSON carries text; bytes that are not UTF-8 need binary_data=true to survive.
        return bytes(item).decode("utf-8", "replace")
    return item if isinstance(item, str) else str(item)


def binary_payload(tensor: Tensor) -> bytes | memoryview:
    """A tensor's raw little-endian bytes, as the binary tensor extension sends them."""
    array = tensor.data
    assert array is not None
    if tensor.datatype == "BYTES":
        return serialize_bytes_tensor(array)
    expected = DATATYPE_TO_NUMPY[tensor.datatype]
    if array.dtype != expected:
        array = array.astype(expected)
    flat: Any = np.ascontiguousarray(array).reshape(-1)  # numpy arrays are buffers
    return memoryview(flat).cast("B")


def _response_header(response: InferenceResponse) -> dict[str, Any]:
    document: dict[str, Any] = {}
    if response.id:
        document["id"] = response.id
    document["model_name"] = response.model_name
    document["model_version"] = response.model_version
    if response.parameters:
        document["parameters"] = response.parameters
    return document


def encode_infer_response(
    response: InferenceResponse, encoding: OutputEncoding | None
) -> tuple[list[bytes | memoryview], int | None]:
    """Encode a response. Returns the body parts and, when raw output bytes follow the JSON, the
    JSON's length (the Inference-Header-Content-Length). `encoding=None` means all-JSON (SSE)."""
    document = _response_header(response)
    outputs: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for tensor in response.outputs:
        output: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if tensor.shared_memory is not None or tensor.data is None:
            # The bytes are in the client's shared-memory region already. No "parameters"
            # either, as Triton: its C++ client (perf_analyzer) reads any output "parameters"
            # as the binary extension's and fails without "binary_data_size".
            pass
        elif encoding is not None and _wants_binary(tensor.name, encoding):
            payload = binary_payload(tensor)
            output["parameters"] = {"binary_data_size": len(payload)}
            if len(payload):
                buffers.append(payload)
        else:
            output["data"] = json_values(tensor)
        outputs.append(output)
    document["outputs"] = outputs
    header = dumps(document)
    if not buffers:
        return [header], None
    return [header, *buffers], len(header)


def _wants_binary(name: str, encoding: OutputEncoding) -> bool:
    requested = encoding.requested.get(name)
    if requested is None or requested.binary is None:
        return encoding.default_binary
    return requested.binary


# --------------------------------------------------------------------------------------------
# Model repository requests.


def decode_load_parameters(
    body: bytes, limits: LoadRequestLimits | None = None
) -> tuple[str, dict[str, bytes]]:
    """A load request's optional body: the "config" override and "file:<path>" contents
    (base64). Returns (config JSON, {path: bytes}); paths lose their "file:" prefix.

    The number of files and their decoded size are checked against `limits` before any file is
    decoded (the size from the base64 length)."""
    if not body:
        return "", {}
    limits = limits or LoadRequestLimits()
    document = parse_json_object(body, "load request", limits.max_json_depth)
    parameters = expect_object(document.get("parameters", {}), "parameters")
    config = ""
    encoded: dict[str, str] = {}
    for key, value in parameters.items():
        if key == "config":
            config = expect_string(value, "config")
        elif key.startswith(FILE_PREFIX):
            encoded[key[len(FILE_PREFIX) :]] = expect_string(value, key)
        else:
            raise InvalidArgumentError(
                f"unexpected load parameter '{key}': expected 'config' or 'file:<path>'"
            )
    limits.check_count(len(encoded))
    limits.check_total(sum(len(content) // 4 * 3 for content in encoded.values()))
    files: dict[str, bytes] = {}
    for path, content in encoded.items():
        try:
            files[path] = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgumentError(
                f"load parameter 'file:{path}' must be base64-encoded file content"
            ) from None
    return config, files


def decode_unload_parameters(body: bytes, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> bool:
    """An unload request's optional body; returns `unload_dependents`."""
    if not body:
        return False
    document = parse_json_object(body, "unload request", max_json_depth)
    parameters = expect_object(document.get("parameters", {}), "parameters")
    if "unload_dependents" not in parameters:
        return False
    return _bool(parameters["unload_dependents"], "unload_dependents")
