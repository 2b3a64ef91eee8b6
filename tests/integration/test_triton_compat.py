"""Behaviours checked against a real Triton 2.51 with Triton's own clients: the classification
extension's value formatting and the statistics of a model that fails, over HTTP and gRPC."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import copy_models, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = copy_models(
        tmp_path_factory.mktemp("compat"), "classify_types", "raises", "raises_batched"
    )
    with running_server(repository) as running:
        yield running


@pytest.fixture(params=["http", "grpc"])
def client(request, server):
    if request.param == "http":
        client = httpclient.InferenceServerClient(server.http_url)
    else:
        client = grpcclient.InferenceServerClient(server.grpc_url)
    client.protocol = request.param
    yield client
    client.close()


def _module(client):
    return httpclient if client.protocol == "http" else grpcclient


def _classify(client, output: str, data: np.ndarray, class_count: int) -> list[list[bytes]]:
    module = _module(client)
    tensor = module.InferInput("INPUT0", list(data.shape), "INT32")
    tensor.set_data_from_numpy(data)
    if client.protocol == "http":
        wanted = module.InferRequestedOutput(output, binary_data=False, class_count=class_count)
    else:
        wanted = module.InferRequestedOutput(output, class_count=class_count)
    result = client.infer("classify_types", [tensor], outputs=[wanted])
    values = result.as_numpy(output)
    return [[v if isinstance(v, bytes) else v.encode() for v in row] for row in values]


# Triton prints integers with std::to_string (no decimals) and floats with "%f".
@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("OUT_INT32", [[b"16:1:dog", b"15:3:fish"], [b"7:0:cat", b"-2:2:bird"]]),
        (
            "OUT_FP32",
            [[b"16.000000:1:dog", b"15.000000:3:fish"], [b"7.000000:0:cat", b"-2.000000:2:bird"]],
        ),
        ("OUT_FP16", [[b"16.000000:1", b"15.000000:3"], [b"7.000000:0", b"-2.000000:2"]]),
        ("OUT_INT64", [[b"16:1", b"15:3"], [b"7:0", b"-2:2"]]),
        ("OUT_UINT8", [[b"16:1", b"15:3"], [b"254:2", b"251:1"]]),  # -2, -5 as uint8
    ],
)
def test_classification_prints_values_as_triton_does(client, output, expected):
    data = np.array([[3, 16, 1, 15], [7, -5, -2, -9]], dtype=np.int32)
    assert _classify(client, output, data, 2) == expected


def _stats(client, model: str) -> dict:
    if client.protocol == "http":
        return client.get_inference_statistics(model)["model_stats"][0]
    response = client.get_inference_statistics(model, as_json=True)
    return response["model_stats"][0]


def _count(stats: dict, key: str) -> int:
    return int(stats.get(key, 0))


@pytest.mark.parametrize("model", ["raises", "raises_batched"])
def test_a_failing_execution_is_counted_as_triton_counts_it(client, model):
    module = _module(client)
    before = _stats(client, model)
    tensor = module.InferInput("INPUT0", [3, 2], "FP32")
    tensor.set_data_from_numpy(np.zeros((3, 2), np.float32))
    with pytest.raises(InferenceServerException, match="this model always fails"):
        client.infer(model, [tensor])
    after = _stats(client, model)
    # One execution of three inferences, one failed request; never a success.
    assert _count(after, "execution_count") == _count(before, "execution_count") + 1
    assert _count(after, "inference_count") == _count(before, "inference_count") + 3
    fail_before = before["inference_stats"].get("fail", {})
    fail_after = after["inference_stats"]["fail"]
    assert _count(fail_after, "count") == _count(fail_before, "count") + 1
    assert _count(fail_after, "ns") > _count(fail_before, "ns")
    assert _count(after["inference_stats"].get("success", {}), "count") == 0
    batch = {int(b["batch_size"]): b for b in after["batch_stats"]}
    assert _count(batch[3]["compute_infer"], "count") >= 1
    assert after["last_inference"] and int(after["last_inference"]) > 0


def _metric(text: str, family: str, labels: str) -> float:
    prefix = f"{family}{{{labels}"
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {prefix} in the metrics")


def test_a_failing_execution_shows_in_the_metrics(server):
    def scrape() -> str:
        host, port = server.metrics_url.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("GET", "/metrics")
            return connection.getresponse().read().decode()
        finally:
            connection.close()

    labels = 'model="raises",'
    before = scrape()
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", [2, 2], "FP32")
    tensor.set_data_from_numpy(np.zeros((2, 2), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("raises", [tensor])
    client.close()
    after = scrape()
    for family, grew in (("nv_inference_exec_count", 1), ("nv_inference_count", 2)):
        assert _metric(after, family, labels) == _metric(before, family, labels) + grew
    failures = "nv_inference_request_failure"
    backend = 'model="raises",reason="BACKEND"'
    assert _metric(after, failures, backend) == _metric(before, failures, backend) + 1


def _export_batch64(repository: Path) -> None:
    """A torch.export program whose batch dimension declares max=64 (and no config.pbtxt)."""
    torch = pytest.importorskip("torch")

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    batch = torch.export.Dim("batch", max=64)
    program = torch.export.export(
        Double().eval(), (torch.ones(2, 3),), dynamic_shapes={"x": {0: batch}}
    )
    (repository / "double" / "1").mkdir(parents=True)
    torch.export.save(program, str(repository / "double" / "1" / "model.pt2"))


def test_an_exported_program_batches_up_to_the_bound_it_declares(tmp_path):
    _export_batch64(tmp_path)
    with running_server(tmp_path) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            assert http.get_model_config("double")["max_batch_size"] == 64
            assert grpc.get_model_config("double").config.max_batch_size == 64
            data = np.arange(15, dtype=np.float32).reshape(5, 3)
            for module, client in ((httpclient, http), (grpcclient, grpc)):
                tensor = module.InferInput("x", [5, 3], "FP32")
                tensor.set_data_from_numpy(data)
                result = client.infer("double", [tensor])
                np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), data * 2)
            tensor = httpclient.InferInput("x", [65, 3], "FP32")
            tensor.set_data_from_numpy(np.zeros((65, 3), np.float32))
            with pytest.raises(InferenceServerException, match="batch-size must be <= 64"):
                http.infer("double", [tensor])
        finally:
            http.close()
            grpc.close()


def test_an_unsupported_content_encoding_is_415_with_the_codings_read(server):
    host, port = server.http_url.rsplit(":", 1)
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]}]}
    )
    for coding in ("br", "compress"):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request(
                "POST",
                "/v2/models/classify_types/infer",
                body=body,
                headers={"Content-Encoding": coding},
            )
            response = connection.getresponse()
            assert response.status == 415
            assert response.getheader("Accept-Encoding") == "gzip, deflate"
            assert coding in json.loads(response.read())["error"]
        finally:
            connection.close()


def test_statistics_of_a_version_not_loaded_is_invalid_argument(server):
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for client in (http, grpc):
            with pytest.raises(InferenceServerException) as caught:
                client.get_inference_statistics("classify_types", "9")
            assert "requested model version is not available for model 'classify_types'" in (
                caught.value.message()
            )
        with pytest.raises(InferenceServerException) as caught:
            grpc.get_inference_statistics("classify_types", "9")
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(InferenceServerException) as caught:
            http.get_inference_statistics("classify_types", "9")
        assert caught.value.status() == "400"
    finally:
        http.close()
        grpc.close()
