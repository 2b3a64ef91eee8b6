"""Every JSON route of the HTTP frontend refuses a body nested past --http-max-json-depth with a
400 that says so (it used to be a 500 from the parser's recursion), and still serves normal
bodies."""

from __future__ import annotations

import http.client
import json

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers import IDENTITY_MODEL_PY, identity_config, running_server, write_model

DEEP = b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
ROUTES = [
    "/v2/models/m/infer",
    "/v2/models/m/generate",
    "/v2/repository/index",
    "/v2/repository/models/m/load",
    "/v2/repository/models/m/unload",
    "/v2/systemsharedmemory/region/r/register",
    "/v2/cudasharedmemory/region/r/register",
    "/v2/trace/setting",
    "/v2/models/m/trace/setting",
    "/v2/logging",
]


def _post(url: str, path: str, body: bytes) -> tuple[int, str]:
    host, port = url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "m", IDENTITY_MODEL_PY, identity_config("m", dims="[ 2 ]"))
    with running_server(
        repo, model_control_mode="explicit", startup_models=["m"], http_max_json_depth=8
    ) as server:
        yield server


@pytest.mark.parametrize("route", ROUTES)
def test_deep_json_is_a_400_naming_the_limit(server, route: str) -> None:
    status, text = _post(server.http_url, route, DEEP)
    assert status == 400, text
    assert "deeper than the 8 levels allowed" in text and "--http-max-json-depth" in text


def test_json_within_the_limit_is_served(server) -> None:
    body = {
        "inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [[1.0], [2.0]]}],
        "parameters": {"note": "[[[[[[[[[[[[ brackets in strings do not nest"},
    }
    status, text = _post(server.http_url, "/v2/models/m/infer", json.dumps(body).encode())
    assert status == 200, text
    assert json.loads(text)["outputs"][0]["data"] == [1.0, 2.0]
    status, _ = _post(server.http_url, "/v2/repository/index", b'{"ready": true}')
    assert status == 200


def test_a_deep_config_string_is_refused_on_both_protocols(server) -> None:
    """The config of a load request is JSON inside a JSON string: checked on its own."""
    deep_config = json.dumps({"backend": "python", "parameters": "x"})[:-1] + ', "x": '
    deep_config += "[" * 3000 + "]" * 3000 + "}"
    body = json.dumps({"parameters": {"config": deep_config}}).encode()
    status, text = _post(server.http_url, "/v2/repository/models/m/load", body)
    assert status == 400 and "config JSON nests deeper than the 8 levels" in text, text
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="config JSON nests deeper") as raised:
        client.load_model("m", config=deep_config)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_model_ready("m")  # the loaded model is untouched
