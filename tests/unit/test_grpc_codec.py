"""The gRPC codec: ModelInferRequest -> InferenceRequest and InferenceResponse -> protobuf.

Requests are built the way tritonclient builds them (its own InferInput / request helper), then
sent through the wire format into our messages, so these tests check compatibility as well as
the translation.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc._utils import _get_inference_request

from trident.runtime.errors import InternalError, InvalidArgumentError
from trident.runtime.frontends.grpc.codec import (
    FINAL_RESPONSE,
    decode_infer_request,
    encode_infer_metadata,
    encode_stream_error,
    is_empty_final,
    wants_empty_final_response,
)
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.types import (
    InferenceResponse,
    SharedMemoryRef,
    Tensor,
)


def _client_request(inputs, outputs=None, **kwargs) -> gs.ModelInferRequest:
    """What tritonclient would put on the wire, parsed by our generated module."""
    options = {
        "model_name": "m",
        "inputs": inputs,
        "model_version": "",
        "request_id": "",
        "outputs": outputs,
        "sequence_id": 0,
        "sequence_start": False,
        "sequence_end": False,
        "priority": 0,
        "timeout": None,
        "parameters": None,
    }
    options.update(kwargs)
    wire = _get_inference_request(**options).SerializeToString()
    return gs.ModelInferRequest.FromString(wire)


def _input(name: str, array: np.ndarray, datatype: str) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _raw_request(shape, datatype, raw: bytes) -> gs.ModelInferRequest:
    msg = gs.ModelInferRequest(model_name="m")
    msg.inputs.add(name="IN", datatype=datatype, shape=shape)
    msg.raw_input_contents.append(raw)
    return msg


# ------------------------------------------------------------------------------- raw inputs


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [
        ("FP32", np.float32),
        ("FP16", np.float16),
        ("FP64", np.float64),
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
        ("BOOL", np.bool_),
    ],
)
def test_raw_inputs_round_trip(datatype: str, dtype: type) -> None:
    array = (np.arange(12) % 7).astype(dtype).reshape(3, 4)
    request = decode_infer_request(_client_request([_input("IN", array, datatype)]))
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("IN", datatype, (3, 4))
    assert tensor.data is not None and tensor.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(tensor.data, array)


def test_raw_input_is_a_view_of_the_request_bytes() -> None:
    payload = np.arange(16, dtype=np.float32).tobytes()
    tensor = decode_infer_request(_raw_request([1, 16], "FP32", payload)).inputs[0]
    assert tensor.data is not None
    assert not tensor.data.flags.owndata  # np.frombuffer: no copy was made
    owner = tensor.data.base
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, bytes) and owner == payload
    assert not tensor.data.flags.writeable


def test_bf16_travels_as_uint16_words() -> None:
    words = np.array([0x3F80, 0x4000], dtype=np.uint16)
    tensor = decode_infer_request(_raw_request([2], "BF16", words.tobytes())).inputs[0]
    assert tensor.datatype == "BF16"
    np.testing.assert_array_equal(tensor.data, words)


def test_bytes_input_from_raw() -> None:
    array = np.array([[b"a", b""], [b"hello", "ü".encode()]], dtype=np.object_)
    request = decode_infer_request(_client_request([_input("IN", array, "BYTES")]))
    data = request.inputs[0].data
    assert data is not None and data.shape == (2, 2)
    assert data.tolist() == [[b"a", b""], [b"hello", "ü".encode()]]


@pytest.mark.parametrize(
    ("shape", "raw"),
    [
        ([4], np.zeros(3, np.float32).tobytes()),  # too short
        ([4], np.zeros(5, np.float32).tobytes()),  # too long
        ([2, 2], b"\x00" * 15),  # not a multiple of the element size
        ([0], b"\x00" * 4),  # zero elements but data
    ],
)
def test_raw_size_must_match_shape(shape, raw) -> None:
    with pytest.raises(InvalidArgumentError, match="byte size"):
        decode_infer_request(_raw_request(shape, "FP32", raw))


def test_huge_declared_shape_is_refused_before_allocating() -> None:
    tracemalloc.start()
    try:
        for datatype in ("FP32", "BYTES", "INT8"):
            with pytest.raises(InvalidArgumentError):
                decode_infer_request(_raw_request([2**40], datatype, b"\x00" * 64))
            with pytest.raises(InvalidArgumentError):
                decode_infer_request(_raw_request([2**20, 2**20, 2**20], datatype, b""))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"decoding allocated {peak} bytes for a 64-byte request"


def test_huge_shape_in_contents_is_refused() -> None:
    msg = gs.ModelInferRequest(model_name="m")
    tensor = msg.inputs.add(name="IN", datatype="BYTES", shape=[2**40])
    tensor.contents.bytes_contents.append(b"x")
    with pytest.raises(InvalidArgumentError, match="contents hold 1 elements"):
        decode_infer_request(msg)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x05\x00\x00\x00abc",  # element longer than what is left
        b"\x01\x00\x00\x00a\x01\x00",  # second length prefix cut short
        b"\x01\x00\x00\x00a\x01\x00\x00\x00bEXTRA",  # bytes left over
    ],
)
def test_bytes_length_prefixes_are_checked(raw: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        decode_infer_request(_raw_request([2], "BYTES", raw))


def test_negative_dimension_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="must not be negative"):
        decode_infer_request(_raw_request([-1, 4], "FP32", b""))


def test_unknown_datatype_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid datatype 'FLOAT'"):
        decode_infer_request(_raw_request([1], "FLOAT", b"\x00" * 4))


def test_missing_and_surplus_raw_contents() -> None:
    msg = gs.ModelInferRequest(model_name="m")
    msg.inputs.add(name="A", datatype="FP32", shape=[1])
    msg.inputs.add(name="B", datatype="FP32", shape=[1])
    msg.raw_input_contents.append(b"\x00" * 4)
    with pytest.raises(InvalidArgumentError, match="unable to find data for input tensor 'B'"):
        decode_infer_request(msg)
    msg.raw_input_contents.extend([b"\x00" * 4, b"\x00" * 4])
    with pytest.raises(InvalidArgumentError, match="3 raw_input_contents"):
        decode_infer_request(msg)


# ------------------------------------------------------------------------------- typed contents


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("FP32", "fp32_contents", [1.5, -2.0, 3.25, 0.0], np.float32),
        ("FP64", "fp64_contents", [1.5, -2.0, 3.25, 0.0], np.float64),
        ("INT32", "int_contents", [1, -2, 3, 2**31 - 1], np.int32),
        ("INT16", "int_contents", [1, -2, 3, 300], np.int16),
        ("INT8", "int_contents", [1, -2, 3, 127], np.int8),
        ("INT64", "int64_contents", [1, -2, 3, 2**40], np.int64),
        ("UINT8", "uint_contents", [1, 2, 3, 255], np.uint8),
        ("UINT16", "uint_contents", [1, 2, 3, 65535], np.uint16),
        ("UINT32", "uint_contents", [1, 2, 3, 2**32 - 1], np.uint32),
        ("UINT64", "uint64_contents", [1, 2, 3, 2**63], np.uint64),
        ("BOOL", "bool_contents", [True, False, True, True], np.bool_),
    ],
)
def test_typed_contents(datatype, field, values, dtype) -> None:
    msg = gs.ModelInferRequest(model_name="m")
    tensor_msg = msg.inputs.add(name="IN", datatype=datatype, shape=[2, 2])
    getattr(tensor_msg.contents, field).extend(values)
    tensor = decode_infer_request(msg).inputs[0]
    assert tensor.data is not None and tensor.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(tensor.data, np.array(values, dtype=dtype).reshape(2, 2))


def test_bytes_contents() -> None:
    msg = gs.ModelInferRequest(model_name="m")
    tensor_msg = msg.inputs.add(name="IN", datatype="BYTES", shape=[3])
    tensor_msg.contents.bytes_contents.extend([b"x", b"", b"yz"])
    data = decode_infer_request(msg).inputs[0].data
    assert data is not None and data.dtype == np.object_
    assert data.tolist() == [b"x", b"", b"yz"]


def test_contents_of_the_wrong_type_are_refused() -> None:
    msg = gs.ModelInferRequest(model_name="m")
    msg.inputs.add(name="IN", datatype="FP32", shape=[2]).contents.int_contents.extend([1, 2])
    with pytest.raises(InvalidArgumentError, match="of type 'INT32', expected datatype 'FP32'"):
        decode_infer_request(msg)


def test_contents_count_must_match_shape() -> None:
    msg = gs.ModelInferRequest(model_name="m")
    msg.inputs.add(name="IN", datatype="FP32", shape=[3]).contents.fp32_contents.extend([1, 2])
    with pytest.raises(InvalidArgumentError, match="contents hold 2 elements"):
        decode_infer_request(msg)


def test_fp16_has_no_contents_field() -> None:
    msg = gs.ModelInferRequest(model_name="m")
    msg.inputs.add(name="IN", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidArgumentError, match="raw_input_contents"):
        decode_infer_request(msg)


def test_contents_and_raw_together_are_refused() -> None:
    msg = _raw_request([1], "FP32", b"\x00" * 4)
    msg.inputs.add(name="B", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidArgumentError, match="contents field must not be specified"):
        decode_infer_request(msg)


# ------------------------------------------------------------------------------- shared memory


def test_shared_memory_input_and_output() -> None:
    infer_input = triton_grpc.InferInput("IN", [2, 4], "FP32")
    infer_input.set_shared_memory("in_region", 32, offset=64)
    requested = triton_grpc.InferRequestedOutput("OUT")
    requested.set_shared_memory("out_region", 128, offset=8)
    request = decode_infer_request(_client_request([infer_input], [requested]))
    tensor = request.inputs[0]
    assert tensor.data is None
    assert tensor.shared_memory == SharedMemoryRef("in_region", 32, 64)
    assert tensor.parameters == {}
    assert request.outputs[0].shared_memory == SharedMemoryRef("out_region", 128, 8)


def test_shared_memory_input_does_not_take_raw_contents() -> None:
    shm = triton_grpc.InferInput("A", [4], "FP32")
    shm.set_shared_memory("region", 16)
    raw = _input("B", np.ones(4, np.float32), "FP32")
    request = decode_infer_request(_client_request([shm, raw]))
    assert request.inputs[0].data is None
    np.testing.assert_array_equal(request.inputs[1].data, np.ones(4, np.float32))


def test_shared_memory_size_is_checked_against_shape() -> None:
    infer_input = triton_grpc.InferInput("IN", [2**40], "FP32")
    infer_input.set_shared_memory("region", 64)
    with pytest.raises(InvalidArgumentError, match="shared_memory_byte_size is 64"):
        decode_infer_request(_client_request([infer_input]))
    strings = triton_grpc.InferInput("IN", [2**40], "BYTES")
    strings.set_shared_memory("region", 64)
    with pytest.raises(InvalidArgumentError, match="BYTES elements"):
        decode_infer_request(_client_request([strings]))


def test_shared_memory_needs_byte_size_and_no_contents() -> None:
    msg = gs.ModelInferRequest(model_name="m")
    tensor_msg = msg.inputs.add(name="IN", datatype="FP32", shape=[1])
    tensor_msg.parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(InvalidArgumentError, match="shared_memory_byte_size"):
        decode_infer_request(msg)
    tensor_msg.parameters["shared_memory_byte_size"].int64_param = 4
    tensor_msg.contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidArgumentError, match="unexpected 'content'"):
        decode_infer_request(msg)


def test_shared_memory_parameter_types_are_checked() -> None:
    msg = gs.ModelInferRequest(model_name="m")
    tensor_msg = msg.inputs.add(name="IN", datatype="FP32", shape=[1])
    tensor_msg.parameters["shared_memory_region"].int64_param = 3
    with pytest.raises(InvalidArgumentError, match="expected a string"):
        decode_infer_request(msg)


# ------------------------------------------------------------------------------- parameters


def test_reserved_parameters_become_request_fields() -> None:
    request = decode_infer_request(
        _client_request(
            [_input("IN", np.zeros(1, np.float32), "FP32")],
            model_version="3",
            request_id="req-7",
            sequence_id=42,
            sequence_start=True,
            sequence_end=False,
            priority=2,
            timeout=5000,
            parameters={"custom_int": 7, "custom_str": "x", "flag": True, "ratio": 0.5},
        )
    )
    assert request.model_name == "m" and request.model_version == 3 and request.id == "req-7"
    assert request.sequence_id == 42
    assert request.sequence_start is True and request.sequence_end is False
    assert request.priority == 2 and request.timeout_us == 5000
    assert request.parameters == {"custom_int": 7, "custom_str": "x", "flag": True, "ratio": 0.5}


def test_string_sequence_id() -> None:
    request = decode_infer_request(
        _client_request(
            [_input("IN", np.zeros(1, np.float32), "FP32")],
            sequence_id="session-1",
            sequence_end=True,
        )
    )
    assert request.sequence_id == "session-1" and request.sequence_end is True


@pytest.mark.parametrize(
    ("key", "member", "value", "message"),
    [
        ("sequence_id", "bool_param", True, "expected an integer or a string"),
        ("sequence_start", "int64_param", 1, "expected a boolean"),
        ("priority", "string_param", "high", "expected an integer"),
        ("priority", "int64_param", -1, "expected value >= 0"),
        ("timeout", "string_param", "1s", "expected an integer"),
        ("triton_unknown", "bool_param", True, "reserved for Triton usage"),
        ("triton_enable_empty_final_response", "int64_param", 1, "expected a boolean"),
    ],
)
def test_bad_reserved_parameters(key, member, value, message) -> None:
    msg = _raw_request([1], "FP32", b"\x00" * 4)
    setattr(msg.parameters[key], member, value)
    with pytest.raises(InvalidArgumentError, match=message):
        decode_infer_request(msg)


def test_empty_final_response_flag_stays_in_the_frontend() -> None:
    msg = _raw_request([1], "FP32", b"\x00" * 4)
    assert not wants_empty_final_response(msg)
    msg.parameters["triton_enable_empty_final_response"].bool_param = True
    assert wants_empty_final_response(msg)
    assert decode_infer_request(msg).parameters == {}


def test_requested_outputs_and_classification() -> None:
    plain = triton_grpc.InferRequestedOutput("A")
    top3 = triton_grpc.InferRequestedOutput("B", class_count=3)
    request = decode_infer_request(
        _client_request([_input("IN", np.zeros(1, np.float32), "FP32")], [plain, top3])
    )
    assert [o.name for o in request.outputs] == ["A", "B"]
    assert request.outputs[0].classification == 0
    assert request.outputs[1].classification == 3
    assert request.outputs[1].parameters == {}


def test_input_parameters_pass_through() -> None:
    msg = _raw_request([1], "FP32", b"\x00" * 4)
    msg.inputs[0].parameters["note"].string_param = "hi"
    assert decode_infer_request(msg).inputs[0].parameters == {"note": "hi"}


# ------------------------------------------------------------------------------- responses


def test_response_metadata() -> None:
    response = InferenceResponse(
        model_name="m",
        model_version="2",
        id="abc",
        outputs=[
            Tensor("F", "FP32", (2, 4), np.zeros((2, 4), np.float32), parameters={"unit": "ms"}),
            Tensor("S", "BYTES", (2,), np.array([b"x", b"yz"], dtype=np.object_)),
        ],
        parameters={"count": 3, "done": True, "why": "ok", "score": 0.25, "big": 2**63},
    )
    msg = encode_infer_metadata(response)
    assert (msg.model_name, msg.model_version, msg.id) == ("m", "2", "abc")
    assert [(o.name, o.datatype, list(o.shape)) for o in msg.outputs] == [
        ("F", "FP32", [2, 4]),
        ("S", "BYTES", [2]),
    ]
    # Tensor bytes are wire.py's job: the metadata carries none.
    assert len(msg.raw_output_contents) == 0
    assert not any(o.HasField("contents") for o in msg.outputs)
    assert msg.outputs[0].parameters["unit"].string_param == "ms"
    assert msg.parameters["count"].int64_param == 3
    assert msg.parameters["done"].bool_param is True
    assert msg.parameters["why"].string_param == "ok"
    assert msg.parameters["score"].double_param == 0.25
    assert msg.parameters["big"].uint64_param == 2**63


def test_parameter_values_out_of_range() -> None:
    with pytest.raises(InternalError, match="64 bits"):
        encode_infer_metadata(InferenceResponse(parameters={"huge": 2**64}))
    msg = encode_infer_metadata(
        InferenceResponse(parameters={"np": np.int32(4), "flag": np.bool_(True), "b": b"hi"})
    )
    assert msg.parameters["np"].int64_param == 4
    assert msg.parameters["flag"].bool_param is True
    assert msg.parameters["b"].string_param == "hi"


def test_stream_error() -> None:
    early = encode_stream_error("bad input", "r1")
    assert early.error_message == "bad input" and early.infer_response.id == "r1"
    assert FINAL_RESPONSE not in early.infer_response.parameters
    late = encode_stream_error("model failed", "r2", "m", "1", final=True)
    assert late.infer_response.model_name == "m"
    assert late.infer_response.parameters[FINAL_RESPONSE].bool_param is True


def test_empty_final_detection() -> None:
    tensor = Tensor("A", "INT32", (1,), np.zeros(1, np.int32))
    assert is_empty_final(InferenceResponse(final=True))
    assert not is_empty_final(InferenceResponse(final=False))
    assert not is_empty_final(InferenceResponse(outputs=[tensor], final=True))
    assert not is_empty_final(InferenceResponse(parameters={"a": 1}, final=True))
