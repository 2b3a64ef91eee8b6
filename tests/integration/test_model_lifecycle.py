"""Model lifecycle through the real server: broken models, versions, control modes, overrides."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import (
    IDENTITY_MODEL_PY,
    identity_config,
    model_source,
    running_server,
    write_model,
)

#: tests/models/versioned: adds its version number to INPUT0.
VERSIONED_MODEL_PY = model_source("versioned")


def _infer_http(client: httpclient.InferenceServerClient, model: str, version: str = "") -> float:
    tensor = httpclient.InferInput("INPUT0", [16], "FP32")
    tensor.set_data_from_numpy(np.zeros(16, np.float32))
    result = client.infer(model, [tensor], model_version=version)
    return float(result.as_numpy("OUTPUT0")[0])


def _index(client: httpclient.InferenceServerClient) -> dict[tuple[str, str], dict]:
    return {(e["name"], e.get("version", "")): e for e in client.get_model_repository_index()}


def test_broken_models_are_unavailable_with_reason_and_others_serve(tmp_path: Path) -> None:
    write_model(tmp_path, "good", IDENTITY_MODEL_PY, identity_config("good"))
    write_model(
        tmp_path, "raises", "raise RuntimeError('boom at import')\n", identity_config("raises")
    )
    write_model(tmp_path, "badconfig", IDENTITY_MODEL_PY, "max_batch_size: 'x'\n")
    write_model(
        tmp_path,
        "initfails",
        textwrap.dedent("""
        class TritonPythonModel:
            def initialize(self, args):
                raise ValueError("cannot find weights.bin")
            def execute(self, requests):
                return []
    """),
        identity_config("initfails"),
    )
    (tmp_path / "noversions").mkdir()
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert client.is_server_live()
        assert not client.is_server_ready()  # strict readiness: some models failed
        assert _infer_http(client, "good") == 0.0
        index = _index(client)
        assert index[("good", "1")]["state"] == "READY"
        assert index[("raises", "1")]["state"] == "UNAVAILABLE"
        assert "boom at import" in index[("raises", "1")]["reason"]
        assert "Couldn't parse integer" in index[("badconfig", "1")]["reason"]
        assert "cannot find weights.bin" in index[("initfails", "1")]["reason"]
        assert "no version folder" in index[("noversions", "")]["reason"]
        with pytest.raises(InferenceServerException, match=r"cannot find weights\.bin"):
            _infer_http(client, "initfails")
        assert not client.is_model_ready("raises")


def test_strict_readiness_off_reports_ready(tmp_path: Path) -> None:
    write_model(tmp_path, "raises", "raise RuntimeError('boom')\n", identity_config("raises"))
    with running_server(tmp_path, strict_readiness=False) as server:
        assert httpclient.InferenceServerClient(server.http_url).is_server_ready()


def test_version_policy_and_per_version_routing(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "v",
        VERSIONED_MODEL_PY,
        identity_config("v", extra="version_policy { all { } }"),
        versions=(1, 2, 3),
    )
    write_model(
        tmp_path,
        "latest2",
        VERSIONED_MODEL_PY,
        identity_config("latest2", extra="version_policy { latest { num_versions: 2 } }"),
        versions=(1, 2, 3),
    )
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert _infer_http(client, "v") == 3.0
        assert _infer_http(client, "v", "1") == 1.0
        assert client.get_model_metadata("v")["versions"] == ["1", "2", "3"]
        assert client.is_model_ready("latest2", "2")
        assert not client.is_model_ready("latest2", "1")
        with pytest.raises(InferenceServerException, match="version 1 is not found"):
            _infer_http(client, "latest2", "1")


def test_explicit_mode_load_unload_and_overrides(tmp_path: Path) -> None:
    write_model(tmp_path, "a", IDENTITY_MODEL_PY, identity_config("a"))
    write_model(tmp_path, "b", IDENTITY_MODEL_PY, identity_config("b"))
    with running_server(tmp_path, model_control_mode="explicit", startup_models=["a"]) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        index = _index(http)
        assert index[("a", "1")]["state"] == "READY"
        assert ("b", "") in index and "state" not in index[("b", "")]  # on disk, never loaded
        assert http.is_server_ready()

        grpc.load_model("b")
        assert http.is_model_ready("b")
        http.unload_model("b")
        assert not http.is_model_ready("b")
        assert _index(http)[("b", "1")] == {
            "name": "b",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        }
        assert http.is_server_ready()  # unloaded on purpose is not a failure

        with pytest.raises(InferenceServerException, match="no model folder named 'nosuch'"):
            http.load_model("nosuch")

        # a config override replaces the whole config (as Triton): max_batch_size becomes 4
        override = {
            "backend": "python",
            "max_batch_size": 4,
            "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [16]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [16]}],
        }
        http.load_model("a", config=json.dumps(override))
        assert http.get_model_config("a")["max_batch_size"] == 4
        assert http.get_model_metadata("a")["inputs"][0]["shape"] == [-1, 16]

        # files sent with the load request make a model that exists nowhere on disk
        files = {"file:1/model.py": IDENTITY_MODEL_PY.encode()}
        grpc.load_model("uploaded", config=json.dumps(override), files=files)
        tensor = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
        assert grpc.infer("uploaded", [tensor]).as_numpy("OUTPUT0").sum() == 16
        with pytest.raises(InferenceServerException, match="need a 'config' parameter"):
            http.load_model("nocfg", files={"file:1/model.py": b"x = 1"})


def test_load_api_refused_outside_explicit_mode(tmp_path: Path) -> None:
    write_model(tmp_path, "a", IDENTITY_MODEL_PY, identity_config("a"))
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        with pytest.raises(InferenceServerException, match="--model-control-mode=explicit"):
            client.load_model("a")


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_poll_mode_loads_reloads_and_keeps_old_version_on_failure(tmp_path: Path) -> None:
    write_model(tmp_path, "p", VERSIONED_MODEL_PY, identity_config("p"))
    with running_server(tmp_path, model_control_mode="poll", repository_poll_secs=0.2) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert _infer_http(client, "p") == 1.0
        # a new model appears
        write_model(tmp_path, "new", IDENTITY_MODEL_PY, identity_config("new"))
        _wait_for(lambda: client.is_model_ready("new"))
        # a new version appears: latest-1 policy moves to it
        write_model(tmp_path, "p", VERSIONED_MODEL_PY, versions=(2,))
        _wait_for(lambda: client.is_model_ready("p", "2"))
        assert _infer_http(client, "p") == 2.0
        # the model breaks on disk: version 2 keeps serving
        (tmp_path / "p" / "2" / "model.py").write_text("raise RuntimeError('broken edit')\n")
        time.sleep(1.0)
        assert client.is_model_ready("p", "2")
        assert _infer_http(client, "p") == 2.0
        # the model folder is removed: it is unloaded
        import shutil

        shutil.rmtree(tmp_path / "new")
        _wait_for(lambda: not client.is_model_ready("new"))
