"""Every non-inference HTTP endpoint, in the JSON shapes real Triton returns: health, metadata,
config, statistics, repository, shared memory, trace, logging, routing errors, and /metrics."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import IDENTITY_MODEL_PY, identity_config, running_server, write_model
from trident.runtime.core.cuda_runtime import cuda_runtime_available

from .http_support import get_json, post_json, request


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repository = tmp_path_factory.mktemp("http_endpoints_repo")
    write_model(
        repository,
        "ident",
        IDENTITY_MODEL_PY,
        identity_config("ident", dims="[ 4 ]", max_batch_size=8),
        versions=(1, 2),
    )
    write_model(repository, "plain", IDENTITY_MODEL_PY, identity_config("plain", dims="[ 2 ]"))
    (repository / "ident" / "config.pbtxt").write_text(
        identity_config("ident", dims="[ 4 ]", max_batch_size=8, extra="version_policy { all { } }")
    )
    return repository


@pytest.fixture(scope="module")
def server(repository):
    with running_server(repository, allow_grpc=False) as running:
        yield running


@pytest.fixture
def client(server):
    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()


def test_health_has_empty_bodies(server):
    for path in ("/v2/health/live", "/v2/health/ready"):
        status, headers, body = request(server.http_url, "GET", path)
        assert (status, body) == (200, b"")
        assert headers["Content-Type"].startswith("text/plain")


def test_server_metadata(server):
    status, document = get_json(server.http_url, "/v2")
    assert status == 200
    assert set(document) == {"name", "version", "extensions"}
    assert "binary_tensor_data" in document["extensions"]


def test_model_metadata_and_readiness_per_version(server, client):
    status, document = get_json(server.http_url, "/v2/models/ident")
    assert status == 200
    assert document == {
        "name": "ident",
        "versions": ["1", "2"],
        "platform": "python",
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}],
    }
    _, document = get_json(server.http_url, "/v2/models/ident/versions/1")
    assert document["versions"] == ["1"]
    assert client.is_model_ready("ident", "1") and client.is_model_ready("ident", "2")
    status, _, body = request(server.http_url, "GET", "/v2/models/ident/versions/9/ready")
    assert status == 400 and json.loads(body) == {"error": "Model version not ready"}
    assert not client.is_model_ready("nosuch")
    status, document = get_json(server.http_url, "/v2/models/nosuch")
    assert status == 404 and "nosuch" in document["error"]


def test_model_config_is_the_normalized_config(server):
    status, config = get_json(server.http_url, "/v2/models/ident/config")
    assert status == 200
    assert config["name"] == "ident" and config["backend"] == "python"
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [4]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["version_policy"] == {"all": {}}


def test_statistics_have_tritons_shape(server, client):
    data = np.ones((1, 4), dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(data)
    client.infer("ident", [tensor], model_version="2")
    status, stats = get_json(server.http_url, "/v2/models/ident/versions/2/stats")
    assert status == 200
    (model,) = stats["model_stats"]
    assert (model["name"], model["version"]) == ("ident", "2")
    assert model["inference_count"] == 1 and model["execution_count"] == 1
    assert isinstance(model["last_inference"], int) and model["last_inference"] > 0
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        duration = model["inference_stats"][key]
        assert set(duration) == {"count", "ns"}
        assert all(isinstance(value, int) for value in duration.values()), (key, duration)
    assert model["inference_stats"]["success"]["count"] == 1
    assert model["batch_stats"][0]["batch_size"] == 1
    _, everything = get_json(server.http_url, "/v2/models/stats")
    listed = {(entry["name"], entry["version"]) for entry in everything["model_stats"]}
    assert {("ident", "1"), ("ident", "2"), ("plain", "1")} <= listed
    assert client.get_inference_statistics("ident")["model_stats"]


def test_repository_index_and_none_mode_refuses_load(server, client):
    status, index = post_json(server.http_url, "/v2/repository/index")
    assert status == 200
    assert {"name": "plain", "version": "1", "state": "READY"} in index
    status, index = post_json(server.http_url, "/v2/repository/index", {"ready": True})
    assert status == 200 and all(entry["state"] == "READY" for entry in index)
    with pytest.raises(InferenceServerException) as info:
        client.load_model("plain")
    assert info.value.status() == "503"


def test_explicit_mode_load_unload_and_file_overrides(repository):
    with running_server(repository, allow_grpc=False, model_control_mode="explicit") as running:
        client = httpclient.InferenceServerClient(running.http_url)
        try:
            assert client.get_model_repository_index() == [{"name": "ident"}, {"name": "plain"}]
            client.load_model("plain")
            assert client.is_model_ready("plain")
            client.unload_model("plain", unload_dependents=True)
            assert not client.is_model_ready("plain")
            status, document = post_json(running.http_url, "/v2/repository/models/nosuch/load")
            assert status == 404 and "nosuch" in document["error"]

            config = json.dumps(
                {
                    "backend": "python",
                    "max_batch_size": 0,
                    "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [3]}],
                    "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [3]}],
                }
            )
            client.load_model(
                "fromfiles",
                config=config,
                files={"file:1/model.py": IDENTITY_MODEL_PY.encode()},
            )
            tensor = httpclient.InferInput("INPUT0", [3], "INT32")
            tensor.set_data_from_numpy(np.array([1, 2, 3], dtype=np.int32))
            result = client.infer("fromfiles", [tensor])
            assert result.as_numpy("OUTPUT0").tolist() == [1, 2, 3]

            status, document = post_json(
                running.http_url,
                "/v2/repository/models/plain/load",
                {"parameters": {"file:1/model.py": "%%% not base64"}},
            )
            assert status == 400 and "base64" in document["error"]
            status, document = post_json(running.http_url, "/v2/repository/other/models/plain/load")
            assert status == 501 and "repository_name" in document["error"]
        finally:
            client.close()


def test_shared_memory_endpoint_errors(server, client):
    status, document = post_json(
        server.http_url, "/v2/systemsharedmemory/register", {"key": "k", "byte_size": 4}
    )
    assert status == 400 and "region name" in document["error"]
    status, document = post_json(
        server.http_url, "/v2/systemsharedmemory/region/r/register", {"byte_size": 4}
    )
    assert status == 400 and "'key'" in document["error"]
    status, document = post_json(
        server.http_url,
        "/v2/systemsharedmemory/region/r/register",
        {"key": "/no_such_trident_key", "byte_size": 4},
    )
    assert status == 400 and "no_such_trident_key" in document["error"]
    status, document = get_json(server.http_url, "/v2/systemsharedmemory/region/zz/status")
    assert status == 404 and "zz" in document["error"]
    assert client.get_system_shared_memory_status() == []
    client.unregister_system_shared_memory()


def test_cuda_shared_memory_without_regions(server, client):
    assert client.get_cuda_shared_memory_status() == []
    client.unregister_cuda_shared_memory()
    status, document = post_json(
        server.http_url,
        "/v2/cudasharedmemory/region/g/register",
        {
            "raw_handle": {"b64": base64.b64encode(b"x" * 64).decode()},
            "device_id": 0,
            "byte_size": 4,
        },
    )
    if cuda_runtime_available():  # a GPU server tries the handle, which is no real one
        assert status == 400 and "could not be opened" in document["error"]
    else:  # more in tests/integration/test_cuda_shared_memory.py
        assert status == 501 and "CUDA shared memory needs" in document["error"]


def test_trace_settings_global_and_per_model(server, client):
    settings = client.get_trace_settings()
    assert isinstance(settings["trace_level"], list)
    assert all(isinstance(value, str) for key, value in settings.items() if key != "trace_level")
    updated = client.update_trace_settings(settings={"trace_rate": "7"})
    assert updated["trace_rate"] == "7"
    per_model = client.update_trace_settings(
        model_name="ident", settings={"trace_rate": "5", "trace_count": "3"}
    )
    assert per_model["trace_rate"] == "5" and per_model["trace_count"] == "3"
    assert client.get_trace_settings()["trace_rate"] == "7"
    # No trace file was given at startup: a level that traces is refused (as in Triton), and
    # the file is never set through the network (docs/tracing.md).
    status, document = post_json(
        server.http_url, "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}
    )
    assert status == 400 and "trace file name is not given" in document["error"]
    status, document = post_json(server.http_url, "/v2/trace/setting", {"trace_file": "/tmp/x"})
    assert status == 501 and "can not be updated through network" in document["error"]
    cleared = client.update_trace_settings(model_name="ident", settings={"trace_count": None})
    assert cleared["trace_count"] == settings["trace_count"]
    status, document = post_json(server.http_url, "/v2/trace/setting", {"trace_level": ["LOUD"]})
    assert status == 400 and "LOUD" in document["error"]
    status, document = get_json(server.http_url, "/v2/models/nosuch/trace/setting")
    assert status == 404


def test_log_settings(server, client):
    settings = client.get_log_settings()
    assert set(settings) == {
        "log_file",
        "log_info",
        "log_warning",
        "log_error",
        "log_verbose_level",
        "log_format",
    }
    updated = client.update_log_settings({"log_verbose_level": 1, "log_info": None})
    assert updated["log_verbose_level"] == 1 and updated["log_info"] == settings["log_info"]
    client.update_log_settings({"log_verbose_level": 0})
    status, document = post_json(server.http_url, "/v2/logging", {"log_info": "yes"})
    assert status == 400 and "log_info" in document["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v2/nothing", 404, "Not Found"),
        ("GET", "/v2/models/ident/versions/x/ready", 404, "Not Found"),
        ("POST", "/v2/health/live", 405, "Method Not Allowed"),
        ("GET", "/v2/models/ident/infer", 405, "Method Not Allowed"),
        ("DELETE", "/v2/logging", 405, "Method Not Allowed"),
        ("POST", "/v2/systemsharedmemory/status", 405, "Method Not Allowed"),
    ],
)
def test_routing_errors(server, method, path, status, error):
    got_status, headers, body = request(server.http_url, method, path)
    assert (got_status, json.loads(body)) == (status, {"error": error})
    assert headers["Content-Type"] == "application/json"


def test_metrics_endpoint(server, client):
    tensor = httpclient.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.zeros(2, np.float32))
    client.infer("plain", [tensor])
    status, headers, body = request(server.metrics_url, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'nv_inference_request_success{model="plain",version="1"} 1' in text
    assert request(server.metrics_url, "GET", "/other")[0] == 404
    assert request(server.metrics_url, "POST", "/metrics")[0] == 405
