"""wire.py: raw tensor bytes cut out of requests and spliced into responses by hand must give
exactly what protobuf itself would parse and produce (checked against tritonclient's modules)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.grpc._infer_result import InferResult

from trident.runtime.frontends.grpc import wire
from trident.runtime.frontends.grpc.codec import FINAL_RESPONSE, decode_infer_request
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.types import InferenceResponse, SharedMemoryRef, Tensor


def _request(payloads: list[bytes], **fields) -> triton_pb2.ModelInferRequest:
    msg = triton_pb2.ModelInferRequest(model_name="m", id="req", **fields)
    msg.parameters["custom"].int64_param = 5
    for index, payload in enumerate(payloads):
        msg.inputs.add(name=f"IN{index}", datatype="UINT8", shape=[len(payload)])
        msg.raw_input_contents.append(payload)
    msg.outputs.add(name="OUT")
    return msg


# ----------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    "payloads",
    [
        [b""],
        [b"x" * 10],
        [b"a" * 200, b"", b"b" * 70_000],  # multi-byte length varints
        [bytes(range(256)) * 300],
    ],
)
def test_split_gives_what_protobuf_parses(payloads) -> None:
    data = _request(payloads).SerializeToString()
    rest, raw = wire.split_raw_input_contents(data)
    assert [bytes(view) for view in raw] == payloads
    parsed_rest = gs.ModelInferRequest.FromString(rest)
    parsed_all = gs.ModelInferRequest.FromString(data)
    parsed_all.ClearField("raw_input_contents")
    assert parsed_rest == parsed_all


def test_split_views_share_the_request_bytes() -> None:
    data = _request([b"z" * 100_000]).SerializeToString()
    msg, raw = wire.read_infer_request(data)
    tensor = decode_infer_request(msg, raw).inputs[0]
    owner = tensor.data
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, memoryview) and owner.obj is data  # no copy of the tensor bytes


def test_raw_contents_anywhere_in_the_message() -> None:
    # Field order is free in protobuf: raw contents first, interleaved, or last.
    head = triton_pb2.ModelInferRequest(model_name="m")
    head.inputs.add(name="A", datatype="UINT8", shape=[2])
    head.inputs.add(name="B", datatype="UINT8", shape=[3])
    first = triton_pb2.ModelInferRequest(raw_input_contents=[b"ab"]).SerializeToString()
    second = triton_pb2.ModelInferRequest(raw_input_contents=[b"cde"]).SerializeToString()
    data = first + head.SerializeToString() + second
    rest, raw = wire.split_raw_input_contents(data)
    request = decode_infer_request(gs.ModelInferRequest.FromString(rest), raw)
    assert [t.data.tobytes() for t in request.inputs] == [b"ab", b"cde"]


@pytest.mark.parametrize(
    "data",
    [
        b"\x3a\x05abc",  # length runs past the end
        b"\x3a",  # no length
        b"\x0a\x80",  # truncated varint
        b"\x0b",  # wire type 3 (groups): not in this schema
        b"\x0d\x00\x00",  # fixed32 cut short
        b"\x08" + b"\xff" * 11,  # varint longer than 64 bits
    ],
)
def test_malformed_framing_is_refused(data: bytes, monkeypatch) -> None:
    monkeypatch.setattr(wire, "SPLIT_THRESHOLD", 0)  # through the scan, then protobuf
    with pytest.raises(DecodeError):
        wire.read_infer_request(b"\x3a\x02ok" + data)


@pytest.mark.parametrize("data", [b"\x08\x01", b"\x0d\x00\x00\x00\x00", b"\x00" * 100])
def test_fields_that_are_not_length_delimited_leave_the_message_to_protobuf(data) -> None:
    assert wire.split_raw_input_contents(b"\x3a\x02ok" + data) == (b"\x3a\x02ok" + data, [])


def test_a_message_of_zero_bytes_is_refused_without_a_python_loop_over_it() -> None:
    # Field number 0 is invalid: protobuf refuses it at once, whatever the size.
    with pytest.raises(DecodeError):
        wire.read_infer_request(bytes(16 * 1024 * 1024))


def test_a_message_of_many_tiny_fields_is_left_to_protobuf() -> None:
    # 200,000 empty model_name fields: the scan stops after MAX_SPLIT_FIELDS.
    data = b"\x0a\x00" * 200_000 + _request([b"x" * 40_000]).SerializeToString()
    rest, raw = wire.split_raw_input_contents(data)
    assert rest is data and raw == []
    msg, inputs = wire.read_infer_request(data)
    assert [bytes(chunk) for chunk in inputs] == [b"x" * 40_000]
    assert msg.model_name == "m"


def test_small_and_large_requests_decode_the_same(monkeypatch) -> None:
    data = _request([bytes(range(100)) * 10]).SerializeToString()
    small = decode_infer_request(*wire.read_infer_request(data))
    monkeypatch.setattr(wire, "SPLIT_THRESHOLD", 0)
    large = decode_infer_request(*wire.read_infer_request(data))
    assert small.parameters == large.parameters == {"custom": 5}
    assert small.id == large.id == "req"
    np.testing.assert_array_equal(small.inputs[0].data, large.inputs[0].data)


# ----------------------------------------------------------------------------- responses


def _reference(response: InferenceResponse) -> triton_pb2.ModelInferResponse:
    """What protobuf itself would produce for this response."""
    msg = triton_pb2.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for tensor in response.outputs:
        msg.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.shared_memory is not None:
            msg.raw_output_contents.append(b"")
        elif tensor.datatype == "BYTES":
            msg.raw_output_contents.append(
                b"".join(len(v).to_bytes(4, "little") + v for v in tensor.data.reshape(-1))
            )
        else:
            msg.raw_output_contents.append(tensor.data.tobytes())
    return msg


def _response() -> InferenceResponse:
    return InferenceResponse(
        model_name="m",
        model_version="1",
        id="r",
        outputs=[
            Tensor("F", "FP32", (2, 3), np.arange(6, dtype=np.float32).reshape(2, 3)),
            Tensor("T", "INT64", (3, 2), np.arange(6, dtype=np.int64).reshape(2, 3).T),
            Tensor("S", "BYTES", (2,), np.array([b"x", b"yz"], dtype=np.object_)),
            Tensor("SHM", "FP32", (4,), np.ones(4, np.float32), SharedMemoryRef("r", 16)),
            Tensor("B", "BOOL", (3,), np.array([True, False, True])),
            Tensor("BIG", "UINT8", (200_000,), np.full(200_000, 7, np.uint8)),
            Tensor("EMPTY", "FP32", (0,), np.zeros(0, np.float32)),
        ],
    )


def test_written_response_parses_like_protobufs_own() -> None:
    response = _response()
    parsed = triton_pb2.ModelInferResponse.FromString(wire.write_infer_response(response))
    assert parsed == _reference(response)
    result = InferResult(parsed)
    np.testing.assert_array_equal(result.as_numpy("T"), np.arange(6).reshape(2, 3).T)
    assert result.as_numpy("S").tolist() == [b"x", b"yz"]
    assert result.as_numpy("B").tolist() == [True, False, True]


def test_written_response_keeps_parameters() -> None:
    response = InferenceResponse(model_name="m", parameters={"n": 3})
    response.outputs.append(
        Tensor("A", "INT32", (1,), np.zeros(1, np.int32), parameters={"k": "v"})
    )
    parsed = triton_pb2.ModelInferResponse.FromString(wire.write_infer_response(response))
    assert parsed.parameters["n"].int64_param == 3
    assert parsed.outputs[0].parameters["k"].string_param == "v"


@pytest.mark.parametrize("final", [False, True])
def test_written_stream_response(final: bool) -> None:
    response = _response()
    parsed = triton_pb2.ModelStreamInferResponse.FromString(
        wire.write_stream_response(response, final)
    )
    assert parsed.error_message == ""
    expected = _reference(response)
    expected.parameters[FINAL_RESPONSE].bool_param = final
    assert parsed.infer_response == expected


def test_empty_final_stream_response() -> None:
    parsed = triton_pb2.ModelStreamInferResponse.FromString(
        wire.write_stream_response(InferenceResponse(model_name="m", id="x"), True)
    )
    assert parsed.infer_response.id == "x"
    assert len(parsed.infer_response.outputs) == 0
    assert len(parsed.infer_response.raw_output_contents) == 0
    assert parsed.infer_response.parameters[FINAL_RESPONSE].bool_param is True
