"""The HTTP wire codec: request bodies as tritonclient builds them, responses as it parses them,
and every malformed size refused before anything is allocated from it."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.http._infer_result import InferResult
from tritonclient.http._utils import _get_inference_request

from trident.runtime.core.model_queries import ModelMetadata, TensorMetadata
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.frontends.http import codec, generate_codec
from trident.runtime.frontends.http.compression import response_compression
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceResponse, SharedMemoryRef, Tensor


def client_body(inputs, outputs=None, **kwargs):
    """The exact body and Inference-Header-Content-Length tritonclient.http would send."""
    options = {
        "request_id": "",
        "sequence_id": 0,
        "sequence_start": False,
        "sequence_end": False,
        "priority": 0,
        "timeout": None,
        "custom_parameters": None,
    }
    options.update(kwargs)
    return _get_inference_request(inputs=inputs, outputs=outputs, **options)


def make_input(name, array, datatype, binary):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def decode(document: dict, header_length=None, tail: bytes = b""):
    body = json.dumps(document).encode() + tail
    return codec.decode_infer_request("m", 0, body, header_length)


# ------------------------------------------------------------------------------ JSON inputs


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("FP32", np.arange(6, dtype=np.float32).reshape(2, 3) / 4),
        ("INT64", np.array([[-(2**40), 5, 7]], dtype=np.int64)),
        ("UINT8", np.array([0, 255, 7], dtype=np.uint8)),
        ("BOOL", np.array([[True], [False]])),
        ("BYTES", np.array([b"hello", "h\u00e9".encode(), b""], dtype=np.object_)),
        ("FP64", np.array([1e300, -0.5])),
    ],
)
def test_client_bodies_decode_to_the_same_arrays(datatype, array, binary):
    body, header_length = client_body([make_input("X", array, datatype, binary)])
    request, encoding = codec.decode_infer_request("m", 3, body, header_length)
    assert request.model_name == "m" and request.model_version == 3
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("X", datatype, array.shape)
    assert tensor.data.dtype == (np.object_ if datatype == "BYTES" else array.dtype)
    assert tensor.data.tolist() == array.tolist()
    # No outputs named: tritonclient asks for every output in binary.
    assert encoding.default_binary is True and encoding.requested == {}


def test_nested_and_flat_json_data_are_both_row_major():
    nested = {"name": "X", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}
    flat = {**nested, "data": [1, 2, 3, 4]}
    for item in (nested, flat):
        request, _ = decode({"inputs": [item]})
        assert request.inputs[0].data.tolist() == [[1, 2], [3, 4]]


def test_fp16_and_bf16_are_accepted_as_json_numbers():
    request, _ = decode(
        {
            "inputs": [
                {"name": "H", "shape": [2], "datatype": "FP16", "data": [0.5, -2]},
                {"name": "B", "shape": [2], "datatype": "BF16", "data": [1.0, -3.0]},
            ]
        }
    )
    half, bf16 = request.inputs
    assert half.data.dtype == np.float16 and half.data.tolist() == [0.5, -2.0]
    # BF16 travels as the upper 16 bits of a float32.
    assert bf16.data.tolist() == [0x3F80, 0xC040]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3, 4]}, "holds 3 elements"),
        ({"shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}, "regular nested list"),
        ({"shape": [2], "datatype": "INT32", "data": [1.5, 2]}, "only numbers"),
        ({"shape": [1], "datatype": "FP32", "data": ["1.0"]}, "only numbers"),
        ({"shape": [1], "datatype": "BOOL", "data": [1]}, "only booleans"),
        ({"shape": [1], "datatype": "UINT8", "data": [256]}, r"\[0, 255\]"),
        ({"shape": [1], "datatype": "INT8", "data": [-129]}, r"\[-128, 127\]"),
        ({"shape": [1], "datatype": "BYTES", "data": [5]}, "must be strings"),
        ({"shape": [2], "datatype": "BYTES", "data": ["a"]}, "holds 2 elements"),
        ({"shape": [-1], "datatype": "FP32", "data": [1]}, "non-negative integers"),
        ({"shape": "2", "datatype": "FP32", "data": [1]}, "expected a list"),
        ({"shape": [1], "datatype": "FLOAT", "data": [1]}, "invalid datatype"),
        ({"shape": [1], "datatype": "FP32"}, "no field is set"),
        (
            {"shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": 4}},
            "set 'data' 'binary_data_size'",
        ),
    ],
)
def test_bad_json_inputs_are_invalid_arguments(item, message):
    with pytest.raises(InvalidArgumentError, match=message):
        decode({"inputs": [{"name": "X", **item}]})


def test_a_huge_declared_dimension_is_refused_before_allocating():
    started = time.perf_counter()
    for datatype, data in (("FP32", [1.0]), ("BYTES", ["a"])):
        with pytest.raises(InvalidArgumentError, match="holds 1099511627776 elements"):
            decode(
                {"inputs": [{"name": "X", "shape": [2**40], "datatype": datatype, "data": data}]}
            )
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [2**40],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    body = header + (1).to_bytes(4, "little") + b"abcd"
    with pytest.raises(InvalidArgumentError, match="needs at least"):
        codec.decode_infer_request("m", 0, body, len(header))
    with pytest.raises(InvalidArgumentError, match="shared_memory_byte_size"):
        decode(
            {
                "inputs": [
                    {
                        "name": "X",
                        "shape": [2**40],
                        "datatype": "BYTES",
                        "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 16},
                    }
                ]
            }
        )
    assert time.perf_counter() - started < 1.0


def test_malformed_json_is_a_400_with_the_parser_message():
    with pytest.raises(InvalidArgumentError, match="failed to parse the request JSON") as info:
        codec.decode_infer_request("m", 0, b'{"inputs": [', None)
    assert info.value.http_status == 400
    with pytest.raises(InvalidArgumentError, match="must be an object"):
        codec.decode_infer_request("m", 0, b"[1, 2]", None)
    with pytest.raises(InvalidArgumentError, match="'inputs'"):
        codec.decode_infer_request("m", 0, b"{}", None)


# ------------------------------------------------------------------------------ binary inputs


def binary_request(inputs: list[tuple[str, str, list[int], int]], tail: bytes):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": size},
                }
                for name, datatype, shape, size in inputs
            ]
        }
    ).encode()
    return header + tail, len(header)


def test_binary_inputs_are_views_of_the_body_in_input_order():
    a = np.arange(4, dtype=np.float32)
    b = np.array([7, 8], dtype=np.int64)
    # Pad the header so both tensors land on aligned offsets: no copy is needed.
    body, header_length = binary_request(
        [("A", "FP32", [4], 16), ("B", "INT64", [2], 16)], a.tobytes() + b.tobytes()
    )
    pad = (-header_length) % 8
    body = body[:header_length] + b" " * pad + body[header_length:]
    request, _ = codec.decode_infer_request("m", 0, body, header_length + pad)
    first, second = request.inputs
    assert first.data.tolist() == a.tolist() and second.data.tolist() == b.tolist()
    assert first.data.base is not None and not first.data.flags.owndata


def test_unaligned_binary_inputs_are_copied_to_aligned_arrays():
    body, header_length = binary_request([("A", "FP64", [1], 8)], np.float64(2.5).tobytes())
    if header_length % 8 == 0:
        body = b" " + body
        header_length += 1
    request, _ = codec.decode_infer_request("m", 0, body, header_length)
    assert request.inputs[0].data.flags.aligned and request.inputs[0].data.tolist() == [2.5]


@pytest.mark.parametrize(
    ("inputs", "tail", "header", "message"),
    [
        ([("A", "FP32", [4], 12)], b"x" * 12, True, "unexpected total byte size 12"),
        ([("A", "FP32", [1], 8)], b"x" * 4, True, "expecting 4 additional bytes"),
        ([("A", "FP32", [1], 4)], b"x" * 6, True, "unexpected additional input data"),
        ([("A", "FP32", [1], 4)], b"x" * 4, False, "Inference-Header-Content-Length"),
        ([("A", "BYTES", [1], 8)], (9).to_bytes(4, "little") + b"abcd", True, "declares 9"),
        ([("A", "BYTES", [2], 5)], (1).to_bytes(4, "little") + b"a", True, "needs at least 8"),
        ([("A", "FP32", [1], -4)], b"", True, "expected value >= 0"),
    ],
)
def test_binary_sizes_must_agree_with_header_and_shape(inputs, tail, header, message):
    body, header_length = binary_request(inputs, tail)
    if not header:
        # Without the header the whole body would be JSON: send just the JSON part.
        body, header_length = body[:header_length], None
    with pytest.raises(InvalidArgumentError, match=message):
        codec.decode_infer_request("m", 0, body, header_length)


# ------------------------------------------------------------------------------ parameters


def test_reserved_parameters_set_request_fields():
    body, header_length = client_body(
        [make_input("X", np.zeros(1, np.float32), "FP32", False)],
        outputs=[httpclient.InferRequestedOutput("Y", binary_data=False)],
        request_id="req-7",
        sequence_id=42,
        sequence_start=True,
        priority=2,
        timeout=1500,
        custom_parameters={"temperature": 0.5, "mode": "fast", "n": 3, "flag": True},
    )
    request, encoding = codec.decode_infer_request("m", 0, body, header_length)
    assert request.id == "req-7"
    assert (request.sequence_id, request.sequence_start, request.sequence_end) == (42, True, False)
    assert (request.priority, request.timeout_us) == (2, 1500)
    assert request.parameters == {"temperature": 0.5, "mode": "fast", "n": 3, "flag": True}
    assert encoding.default_binary is False
    assert encoding.requested["Y"].binary is False


def test_string_sequence_ids_are_kept_as_strings():
    request, _ = decode({"parameters": {"sequence_id": "abc", "sequence_end": True}, "inputs": []})
    assert request.sequence_id == "abc" and request.sequence_end is True


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"triton_enable_empty_final_response": True}, "reserved for Triton"),
        ({"custom": {"nested": 1}}, "invalid type"),
        ({"custom": None}, "invalid type"),
        ({"sequence_id": -1}, "sequence_id"),
        ({"priority": "high"}, "priority"),
        ({"sequence_start": 1}, "sequence_start"),
        ({"binary_data_output": "yes"}, "binary_data_output"),
    ],
)
def test_bad_parameters_are_invalid_arguments(parameters, message):
    with pytest.raises(InvalidArgumentError, match=message):
        decode({"parameters": parameters, "inputs": []})
    with pytest.raises(InvalidArgumentError, match="'id'"):
        decode({"id": 5, "inputs": []})


def test_requested_outputs_carry_binary_classification_and_shared_memory():
    shm_output = httpclient.InferRequestedOutput("S")
    shm_output.set_shared_memory("out_region", 64, offset=16)
    body, header_length = client_body(
        [make_input("X", np.zeros(1, np.float32), "FP32", True)],
        outputs=[
            httpclient.InferRequestedOutput("A", binary_data=True),
            httpclient.InferRequestedOutput("C", binary_data=False, class_count=3),
            shm_output,
        ],
    )
    request, encoding = codec.decode_infer_request("m", 0, body, header_length)
    a, c, s = request.outputs
    assert (a.name, a.binary, a.classification) == ("A", True, 0)
    assert (c.binary, c.classification) == (False, 3)
    assert s.shared_memory == SharedMemoryRef(region="out_region", byte_size=64, offset=16)
    assert encoding.requested == {"A": a, "C": c, "S": s}


def test_shared_memory_inputs_become_references():
    tensor = httpclient.InferInput("X", [2, 2], "INT32")
    tensor.set_shared_memory("in_region", 16, offset=8)
    body, header_length = client_body([tensor])
    request, _ = codec.decode_infer_request("m", 0, body, header_length)
    (decoded,) = request.inputs
    assert decoded.data is None
    assert decoded.shared_memory == SharedMemoryRef(region="in_region", byte_size=16, offset=8)
    with pytest.raises(InvalidArgumentError, match="needs 16 bytes"):
        tensor.set_shared_memory("in_region", 12)
        codec.decode_infer_request("m", 0, *client_body([tensor]))


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"shared_memory_region": "r", "classification": 2}, "'classification'"),
        ({"shared_memory_region": "r", "binary_data": True}, "'binary_data'"),
        ({"classification": -1}, "classification"),
        ({"binary_data": "true"}, "binary_data"),
    ],
)
def test_conflicting_output_parameters_are_refused(parameters, message):
    with pytest.raises(InvalidArgumentError, match=message):
        decode({"inputs": [], "outputs": [{"name": "Y", "parameters": parameters}]})


# ------------------------------------------------------------------------------ raw body


def raw_config(datatype: str, dims: list[int], max_batch_size: int = 0) -> mc.ModelConfig:
    config = mc.ModelConfig(name="raw", max_batch_size=max_batch_size)
    config.input.add(name="IN", data_type=mc.DataType.Value(datatype), dims=dims)
    return config


def test_a_raw_body_is_the_only_input_with_its_shape_deduced():
    data = np.arange(6, dtype=np.float32)
    request, encoding = codec.decode_raw_request(
        "raw", 0, data.tobytes(), raw_config("TYPE_FP32", [-1], max_batch_size=4)
    )
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("IN", "FP32", (1, 6))
    assert tensor.data.tolist() == [data.tolist()]
    assert encoding.default_binary is True

    request, _ = codec.decode_raw_request("raw", 0, b"any bytes", raw_config("TYPE_STRING", [1]))
    assert request.inputs[0].shape == (1,) and request.inputs[0].data.tolist() == [b"any bytes"]


@pytest.mark.parametrize(
    ("config", "body", "message"),
    [
        (raw_config("TYPE_FP32", [-1, -1]), b"", "more than one variable-sized"),
        (raw_config("TYPE_FP32", [3]), b"x" * 6, "not a multiple"),
        (raw_config("TYPE_FP32", [3]), b"x" * 8, "unexpected total byte size 8"),
        (raw_config("TYPE_STRING", [2]), b"ab", "must have input shape"),
    ],
)
def test_raw_bodies_that_cannot_fit_the_input_are_refused(config, body, message):
    with pytest.raises(InvalidArgumentError, match=message):
        codec.decode_raw_request("raw", 0, body, config)
    two_inputs = raw_config("TYPE_FP32", [1])
    two_inputs.input.add(name="IN2", data_type=mc.TYPE_FP32, dims=[1])
    with pytest.raises(InvalidArgumentError, match="got 2 inputs"):
        codec.decode_raw_request("raw", 0, b"x" * 4, two_inputs)


# ------------------------------------------------------------------------------ responses


def sample_response(**kwargs) -> InferenceResponse:
    return InferenceResponse(
        model_name="m",
        model_version="2",
        outputs=[
            Tensor("F", "FP32", (1, 3), np.array([[1.5, 2, 3]], dtype=np.float32)),
            Tensor("S", "BYTES", (2,), np.array([b"ab", b"\xc3\xa9"], dtype=np.object_)),
            Tensor("H", "FP16", (2,), np.array([0.5, 1], dtype=np.float16)),
        ],
        **kwargs,
    )


def test_json_responses_are_flat_and_omit_an_empty_id():
    parts, header_length = codec.encode_infer_response(sample_response(), codec.OutputEncoding())
    assert header_length is None and len(parts) == 1
    assert json.loads(parts[0]) == {
        "model_name": "m",
        "model_version": "2",
        "outputs": [
            {"name": "F", "datatype": "FP32", "shape": [1, 3], "data": [1.5, 2.0, 3.0]},
            {"name": "S", "datatype": "BYTES", "shape": [2], "data": ["ab", "\u00e9"]},
            {"name": "H", "datatype": "FP16", "shape": [2], "data": [0.5, 1.0]},
        ],
    }
    parts, _ = codec.encode_infer_response(
        sample_response(id="7", parameters={"np": np.int64(3)}), None
    )
    document = json.loads(parts[0])
    assert document["id"] == "7" and document["parameters"] == {"np": 3}


@pytest.mark.parametrize("default_binary", [False, True])
def test_binary_responses_parse_with_tritonclient(default_binary):
    requested = httpclient.InferRequestedOutput("F", binary_data=True)
    encoding = codec.OutputEncoding(default_binary=default_binary)
    encoding.requested["F"] = codec._decode_output(requested._get_tensor())
    parts, header_length = codec.encode_infer_response(sample_response(), encoding)
    body = b"".join(bytes(part) for part in parts)
    document = json.loads(body[:header_length])
    sizes = [output.get("parameters", {}).get("binary_data_size") for output in document["outputs"]]
    assert sizes == ([12, 12, 4] if default_binary else [12, None, None])
    result = InferResult.from_response_body(body, header_length=header_length)
    assert result.as_numpy("F").tolist() == [[1.5, 2.0, 3.0]]
    # JSON BYTES come back as text, binary ones as bytes (tritonclient's own behaviour).
    texts = [item if isinstance(item, str) else item.decode() for item in result.as_numpy("S")]
    assert texts == ["ab", "\u00e9"]
    assert result.as_numpy("H").tolist() == [0.5, 1.0]


def test_shared_memory_outputs_have_no_data_and_no_parameters():
    # As Triton: perf_analyzer's C++ client fails on output "parameters" that lack
    # "binary_data_size", so an output in shared memory carries none.
    response = sample_response()
    response.outputs[0].shared_memory = SharedMemoryRef("out", 12, 4)
    response.outputs[0].parameters = {"set_by_backend": 1}
    parts, header_length = codec.encode_infer_response(
        response, codec.OutputEncoding(default_binary=True)
    )
    document = json.loads(parts[0][:header_length])
    assert document["outputs"][0] == {"name": "F", "datatype": "FP32", "shape": [1, 3]}
    assert all(
        set(output.get("parameters", {})) <= {"binary_data_size"} for output in document["outputs"]
    )


def test_an_all_empty_binary_response_is_plain_json():
    response = InferenceResponse(
        model_name="m", model_version="1", outputs=[Tensor("E", "FP32", (0,), np.zeros(0))]
    )
    parts, header_length = codec.encode_infer_response(
        response, codec.OutputEncoding(default_binary=True)
    )
    assert header_length is None
    assert json.loads(parts[0])["outputs"][0]["parameters"] == {"binary_data_size": 0}


def test_bf16_outputs_become_floats_in_json():
    words = np.array([0x3F80, 0xC040], dtype=np.uint16)
    response = InferenceResponse(outputs=[Tensor("B", "BF16", (2,), words)])
    parts, _ = codec.encode_infer_response(response, None)
    assert json.loads(parts[0])["outputs"][0]["data"] == [1.0, -3.0]


# ------------------------------------------------------------------------------ generate


def metadata(*inputs: tuple[str, str, list[int]]) -> ModelMetadata:
    tensors = tuple(TensorMetadata(name, kind, tuple(shape)) for name, kind, shape in inputs)
    return ModelMetadata("llm", ("1",), "llm", tensors, ())


def test_generate_fields_map_to_inputs_and_parameters():
    body = json.dumps(
        {
            "id": "g1",
            "text_input": "hello",
            "max_tokens": 8,
            "stop": [1, 2, 3],
            "parameters": {"temperature": 0.1, "sequence_id": 9, "top_k": 4},
        }
    ).encode()
    request = generate_codec.decode_generate_request(
        "llm",
        0,
        body,
        metadata(
            ("text_input", "BYTES", [1]), ("max_tokens", "INT32", [-1, 1]), ("stop", "INT64", [-1])
        ),
    )
    assert request.id == "g1" and request.sequence_id == 9
    assert request.parameters == {"temperature": 0.1, "top_k": 4}
    by_name = {tensor.name: tensor for tensor in request.inputs}
    assert by_name["text_input"].shape == (1,)
    assert by_name["text_input"].data.tolist() == [b"hello"]
    assert by_name["max_tokens"].shape == (1, 1) and by_name["max_tokens"].data.dtype == np.int32
    assert by_name["stop"].shape == (3,) and by_name["stop"].data.tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("dims", "count", "expected"),
    [
        ([1], 1, (1,)),
        ([-1, 1], 1, (1, 1)),
        ([-1, -1], 4, (1, 4)),
        ([2, -1], 6, (2, 3)),
        ([3], 2, None),
    ],
)
def test_generate_shapes_follow_tritons_padding_rule(dims, count, expected):
    if expected is None:
        with pytest.raises(InvalidArgumentError, match="proper shape"):
            generate_codec.generate_shape("x", dims, count)
    else:
        assert generate_codec.generate_shape("x", dims, count) == expected


def test_generate_rejects_values_that_do_not_fit():
    meta = metadata(("text_input", "BYTES", [1]), ("n", "INT32", [1]))
    for document, message in (
        ({"text_input": 5}, "must be strings"),
        ({"n": "five"}, "only numbers"),
        ({"text_input": [["a"]]}, "flat list"),
        ({"parameters": [1]}, "'parameters'"),
        ({"extra": {"a": 1}}, "invalid type"),
    ):
        with pytest.raises(InvalidArgumentError, match=message):
            generate_codec.decode_generate_request("llm", 0, json.dumps(document).encode(), meta)


def test_generate_responses_are_flat_objects_with_scalars():
    response = InferenceResponse(
        model_name="llm",
        model_version="1",
        id="g1",
        parameters={"finish": "stop"},
        outputs=[
            Tensor("text_output", "BYTES", (1,), np.array([b"hi"], dtype=np.object_)),
            Tensor("logprobs", "FP32", (2,), np.array([-0.5, -1], dtype=np.float32)),
        ],
    )
    body = generate_codec.encode_generate_response(response)
    assert body == (
        b'{"finish":"stop","id":"g1","logprobs":[-0.5,-1.0],"model_name":"llm",'
        b'"model_version":"1","text_output":"hi"}'
    )


# ------------------------------------------------------------------------------ repository


def test_load_parameters_decode_config_and_base64_files():
    body = json.dumps(
        {
            "parameters": {
                "config": '{"backend": "python"}',
                "file:1/model.py": base64.b64encode(b"print('hi')").decode(),
            }
        }
    ).encode()
    assert codec.decode_load_parameters(body) == (
        '{"backend": "python"}',
        {"1/model.py": b"print('hi')"},
    )
    assert codec.decode_load_parameters(b"") == ("", {})
    for bad, message in (
        ({"parameters": {"file:1/model.py": "not base64!"}}, "base64"),
        ({"parameters": {"other": "x"}}, "unexpected load parameter"),
        ({"parameters": {"config": {"backend": "python"}}}, "'config'"),
    ):
        with pytest.raises(InvalidArgumentError, match=message):
            codec.decode_load_parameters(json.dumps(bad).encode())


def test_unload_parameters():
    assert codec.decode_unload_parameters(b"") is False
    assert codec.decode_unload_parameters(b'{"parameters":{"unload_dependents":true}}') is True
    with pytest.raises(InvalidArgumentError, match="unload_dependents"):
        codec.decode_unload_parameters(b'{"parameters":{"unload_dependents":"yes"}}')


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip, deflate", "gzip"),
        ("deflate, gzip;q=0.5", "deflate"),
        ("br", "identity"),
        ("gzip;q=0, identity", "identity"),
        ("gzip;q=abc, deflate", "deflate"),
    ],
)
def test_response_compression_picks_like_triton(header, expected):
    assert response_compression(header) == expected
