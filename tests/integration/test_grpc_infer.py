"""ModelInfer over gRPC, driven by tritonclient.grpc (sync and aio) and by our own stubs for the
wire details tritonclient never sends (typed contents, malformed tensors)."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
import tritonclient.utils.shared_memory as shm

from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.protocol import grpc_service_pb2_grpc as gs_grpc

from .grpc_support import GRPC_IMPLEMENTATIONS, expect_code, serving_test_models, wait_for


@pytest.fixture(scope="module", params=GRPC_IMPLEMENTATIONS)
def server(request, tmp_path_factory):
    with serving_test_models(tmp_path_factory, request.param) as running:
        yield running


@pytest.fixture
def client(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield gs_grpc.GRPCInferenceServiceStub(channel)


def _input(name: str, data: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def _fp32_request(model: str, shape: list[int], raw: bytes) -> gs.ModelInferRequest:
    request = gs.ModelInferRequest(model_name=model)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=shape)
    request.raw_input_contents.append(raw)
    return request


# ------------------------------------------------------------------------------ happy paths


def test_identity_round_trip(client):
    data = np.arange(8, dtype=np.float32).reshape(2, 4) / 3
    result = client.infer("ident", [_input("INPUT0", data, "FP32")], request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("ident", "1", "r-1")
    assert len(response.raw_output_contents) == 1
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", "FP32", [2, 4])
    ]


def test_explicit_version_and_requested_output(client):
    data = np.ones((1, 4), dtype=np.float32)
    result = client.infer(
        "ident",
        [_input("INPUT0", data, "FP32")],
        model_version="1",
        outputs=[grpcclient.InferRequestedOutput("OUTPUT0")],
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_bytes_tensors(client):
    data = np.array([b"hello", b"", "wörld".encode(), b"\x00\xff"], dtype=np.object_)
    result = client.infer("strings", [_input("INPUT0", data, "BYTES")])
    assert result.as_numpy("OUTPUT0").tolist() == data.tolist()


def test_big_tensor_beyond_default_message_limits(server):
    # 8 MiB each way: grpc's default limit is 4 MiB, Trident sets none (like Triton).
    data = np.random.default_rng(0).random(2 * 2**20, dtype=np.float32)
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(server.grpc_url, options=options) as channel:
        stub = gs_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(_fp32_request("any_fp32", [data.size], data.tobytes()))
    out = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize(
    ("field", "values", "datatype", "model"),
    [
        ("fp32_contents", [1.5, -2.0, 3.25, 0.0], "FP32", "ident"),
        ("bytes_contents", [b"a", b"bc"], "BYTES", "strings"),
    ],
)
def test_typed_contents_inputs(stub, field, values, datatype, model):
    request = gs.ModelInferRequest(model_name=model)
    shape = [1, len(values)] if model == "ident" else [len(values)]
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    reply = stub.ModelInfer(request)
    # Outputs always come back as raw_output_contents, never as typed contents.
    assert not reply.outputs[0].HasField("contents")
    raw = reply.raw_output_contents[0]
    if datatype == "FP32":
        np.testing.assert_array_equal(np.frombuffer(raw, np.float32), values)
    else:
        assert raw == b"".join(len(v).to_bytes(4, "little") + v for v in values)


def test_parameters_reach_the_model_and_reserved_ones_do_not(client):
    result = client.infer(
        "echo",
        [_input("INPUT0", np.zeros(1, np.float32), "FP32")],
        request_id="echo-1",
        sequence_id=77,
        sequence_start=True,
        sequence_end=True,
        parameters={"temperature": 0.5, "mode": "fast", "steps": 3, "stream": False},
    )
    params = json.loads(result.as_numpy("PARAMS")[0])
    assert params == {"temperature": 0.5, "mode": "fast", "steps": 3, "stream": False}
    assert result.as_numpy("ID")[0] == b"echo-1"
    assert result.as_numpy("CORR")[0] == b"77"
    response_params = result.get_response().parameters
    assert response_params["echoed"].bool_param is True
    assert response_params["inputs"].int64_param == 1


def test_string_sequence_id(client):
    result = client.infer(
        "echo",
        [_input("INPUT0", np.zeros(1, np.float32), "FP32")],
        sequence_id="session-9",
        sequence_start=True,
    )
    assert result.as_numpy("CORR")[0] == b"session-9"


def test_classification(client):
    data = np.array([[0.1, 0.9, 0.3, 0.7]], dtype=np.float32)
    result = client.infer(
        "ident",
        [_input("INPUT0", data, "FP32")],
        outputs=[grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)],
    )
    assert result.as_numpy("OUTPUT0").tolist() == [[b"0.900000:1:b", b"0.700000:3:d"]]


def test_system_shared_memory_inputs_and_outputs(client):
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    in_handle = shm.create_shared_memory_region("grpc_in", "/grpc_infer_in", data.nbytes)
    out_handle = shm.create_shared_memory_region("grpc_out", "/grpc_infer_out", 64)
    try:
        shm.set_shared_memory_region(in_handle, [data])
        client.register_system_shared_memory("grpc_in", "/grpc_infer_in", data.nbytes)
        client.register_system_shared_memory("grpc_out", "/grpc_infer_out", 64)
        tensor = grpcclient.InferInput("INPUT0", [2, 4], "FP32")
        tensor.set_shared_memory("grpc_in", data.nbytes)
        output = grpcclient.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory("grpc_out", 64)
        result = client.infer("ident", [tensor], outputs=[output])
        response = result.get_response()
        assert [list(o.shape) for o in response.outputs] == [[2, 4]]
        # Outputs in shared memory travel without raw contents.
        assert list(response.raw_output_contents) in ([], [b""])
        out = shm.get_contents_as_numpy(out_handle, np.float32, [2, 4])
        np.testing.assert_array_equal(out, data)
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


def test_aio_client(server):
    async def run():
        client = aiogrpcclient.InferenceServerClient(server.grpc_url)
        try:
            assert await client.is_server_ready()
            data = np.full((1, 4), 2.5, dtype=np.float32)
            inputs = [aiogrpcclient.InferInput("INPUT0", [1, 4], "FP32")]
            inputs[0].set_data_from_numpy(data)
            results = await asyncio.gather(*(client.infer("ident", inputs) for _ in range(16)))
            for result in results:
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
        finally:
            await client.close()

    asyncio.run(run())


# ------------------------------------------------------------------------------ errors


def test_unknown_model_is_not_found(client):
    expect_code(
        grpc.StatusCode.NOT_FOUND,
        lambda: client.infer("nosuch", [_input("INPUT0", np.zeros((1, 4), np.float32), "FP32")]),
        "nosuch",
    )


def test_wrong_shape_and_datatype_are_invalid(client):
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: client.infer("ident", [_input("INPUT0", np.zeros((1, 3), np.float32), "FP32")]),
    )
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: client.infer("ident", [_input("INPUT0", np.zeros((1, 4), np.int32), "INT32")]),
    )


def test_malformed_tensors_are_refused_and_the_server_keeps_serving(stub, client):
    # A declared size of 2**40 elements with 64 bytes of data: refused before any allocation.
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: stub.ModelInfer(_fp32_request("any_fp32", [2**40], b"\x00" * 64)),
    )
    huge_strings = gs.ModelInferRequest(model_name="strings")
    huge_strings.inputs.add(name="INPUT0", datatype="BYTES", shape=[2**40])
    huge_strings.raw_input_contents.append(b"\x01\x00\x00\x00a")
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(huge_strings))
    truncated = gs.ModelInferRequest(model_name="strings")
    truncated.inputs.add(name="INPUT0", datatype="BYTES", shape=[1])
    truncated.raw_input_contents.append(b"\xff\x00\x00\x00abc")
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(truncated), "BYTES")
    short = _fp32_request("ident", [1, 4], b"\x00" * 15)
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(short), "byte size")
    no_data = gs.ModelInferRequest(model_name="ident")
    no_data.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(no_data), "unable to find data"
    )
    reserved = _fp32_request("ident", [1, 4], b"\x00" * 16)
    reserved.parameters["triton_colour"].string_param = "blue"
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(reserved), "triton_")
    bad_version = _fp32_request("ident", [1, 4], b"\x00" * 16)
    bad_version.model_version = "latest"
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(bad_version))
    assert client.is_server_live()
    data = np.ones((1, 4), np.float32)
    result = client.infer("ident", [_input("INPUT0", data, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_decoupled_model_is_refused_on_model_infer(client):
    expect_code(
        grpc.StatusCode.UNIMPLEMENTED,
        lambda: client.infer("repeat", [_input("IN", np.array([2], np.int32), "INT32")]),
        "decoupled",
    )


def test_model_failure_is_internal(client):
    expect_code(
        grpc.StatusCode.INTERNAL,
        lambda: client.infer("fail", [_input("INPUT0", np.zeros(1, np.float32), "FP32")]),
        "always fails",
    )


def test_client_timeout_cancels_the_request(server, client):
    marker = server.markers / "slow"
    marker.unlink(missing_ok=True)
    expect_code(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        lambda: client.infer(
            "slow", [_input("INPUT0", np.zeros(1, np.float32), "FP32")], client_timeout=0.5
        ),
    )
    assert wait_for(marker.exists), "the model never saw its request cancelled"


def test_aio_cancellation_reaches_the_model(server):
    marker = server.markers / "slow"
    marker.unlink(missing_ok=True)

    async def run():
        client = aiogrpcclient.InferenceServerClient(server.grpc_url)
        try:
            inputs = [aiogrpcclient.InferInput("INPUT0", [1], "FP32")]
            inputs[0].set_data_from_numpy(np.zeros(1, np.float32))
            call = asyncio.ensure_future(client.infer("slow", inputs))
            await asyncio.sleep(0.5)
            call.cancel()
            with pytest.raises((asyncio.CancelledError, grpcclient.InferenceServerException)):
                await call
        finally:
            await client.close()

    asyncio.run(run())
    assert wait_for(marker.exists), "the model never saw its request cancelled"
