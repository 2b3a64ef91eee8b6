"""The request rules the core applies for both frontends (model versions, request, input and
output parameters) answer the same refusal, in the same words, on HTTP and on gRPC."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers import copy_models, running_server
from tests.integration.http_support import request

MODEL = "echo_fp32"
BAD_VERSION = (
    "failed to get model version from specified version string '{}', version should be an "
    "integral value > 0"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = copy_models(tmp_path_factory.mktemp("rules"), MODEL)
    with running_server(repository) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _http_error(server, method: str, path: str, document: object = None) -> tuple[int, str]:
    status, _, body = request(server.http_url, method, path, document)
    return status, json.loads(body)["error"]


def _grpc_error(call, message) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(message, timeout=30)
    return info.value.code(), info.value.details()


def _set(target: service_pb2.InferParameter, value: object) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    else:
        target.string_param = str(value)


def _grpc_infer(request_parameters: dict, output_parameters: dict) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name=MODEL)
    message.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 1])
    message.raw_input_contents.append(np.ones(1, np.float32).tobytes())
    for key, value in request_parameters.items():
        _set(message.parameters[key], value)
    if output_parameters:
        output = message.outputs.add(name="OUTPUT0")
        for key, value in output_parameters.items():
            _set(output.parameters[key], value)
    return message


def _http_infer(request_parameters: dict, output_parameters: dict) -> dict:
    document: dict = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}],
        "parameters": request_parameters,
    }
    if output_parameters:
        document["outputs"] = [{"name": "OUTPUT0", "parameters": output_parameters}]
    return document


def test_a_bad_version_is_refused_in_tritons_words_on_both_protocols(server, stub) -> None:
    # The HTTP route only takes digits: a version past int64 is its bad version.
    too_big = "9" * 20
    status, error = _http_error(server, "GET", f"/v2/models/{MODEL}/versions/{too_big}/ready")
    assert (status, error) == (400, BAD_VERSION.format(too_big))
    status, error = _http_error(
        server, "POST", f"/v2/models/{MODEL}/versions/{too_big}/infer", _http_infer({}, {})
    )
    assert (status, error) == (400, BAD_VERSION.format(too_big))

    code, details = _grpc_error(
        stub.ModelReady, service_pb2.ModelReadyRequest(name=MODEL, version="latest")
    )
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, BAD_VERSION.format("latest"))
    bad_infer = _grpc_infer({}, {})
    bad_infer.model_version = too_big
    code, details = _grpc_error(stub.ModelInfer, bad_infer)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, BAD_VERSION.format(too_big))


def test_negative_and_empty_versions_mean_latest(server, stub) -> None:
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name=MODEL, version="-1")).ready
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name=MODEL, version="")).ready
    status, _, _ = request(server.http_url, "GET", f"/v2/models/{MODEL}/versions/1/ready")
    assert status == 200


@pytest.mark.parametrize(
    ("request_parameters", "output_parameters", "message"),
    [
        ({"priority": -1}, {}, "invalid value for 'priority', expected value >= 0."),
        ({"sequence_id": -5}, {}, "invalid value for 'sequence_id', expected value >= 0."),
        (
            {"sequence_start": 1},
            {},
            "invalid value type for 'sequence_start' parameter, expected a boolean.",
        ),
        ({"timeout": "1s"}, {}, "invalid value type for 'timeout' parameter, expected an integer."),
        (
            {},
            {"shared_memory_region": "r", "classification": 2},
            "Output can't set both 'shared_memory_region' and 'classification'",
        ),
        (
            {},
            {"classification": "3"},
            "invalid value type for 'classification' parameter of output 'OUTPUT0', expected an "
            "integer.",
        ),
    ],
)
def test_parameter_refusals_read_the_same_on_both_protocols(
    server, stub, request_parameters, output_parameters, message
) -> None:
    status, error = _http_error(
        server,
        "POST",
        f"/v2/models/{MODEL}/infer",
        _http_infer(request_parameters, output_parameters),
    )
    assert (status, error) == (400, message)
    code, details = _grpc_error(stub.ModelInfer, _grpc_infer(request_parameters, output_parameters))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_accepted_parameters_still_serve_on_both_protocols(server, stub) -> None:
    parameters = {"priority": 0, "timeout": 10_000_000, "note": "x"}
    status, _, body = request(
        server.http_url, "POST", f"/v2/models/{MODEL}/infer", _http_infer(parameters, {})
    )
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [1.0]
    reply = stub.ModelInfer(_grpc_infer(parameters, {}), timeout=30)
    assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [1.0]
