"""Python models calling other models (BLS) through the real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers import (
    IDENTITY_MODEL_PY,
    copy_models,
    identity_config,
    running_server,
    write_model,
)


def _infer(client, model: str, value: float, parameters=None) -> np.ndarray:
    tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
    tensor.set_data_from_numpy(np.full(16, value, np.float32))
    return client.infer(model, [tensor], parameters=parameters).as_numpy("OUTPUT0")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository: Path = tmp_path_factory.mktemp("bls")
    write_model(repository, "inner", IDENTITY_MODEL_PY, identity_config("inner"))
    copy_models(repository, "outer", "outer_async")
    with running_server(repository) as running:
        yield running


def test_sync_bls_keeps_working_across_many_calls(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    # enough calls for the server to try running the model inline (it must fall back cleanly)
    for value in range(40):
        assert _infer(client, "outer", float(value))[0] == value * 2 + 1
    stats = client.get_inference_statistics("inner", as_json=True)
    assert int(stats["model_stats"][0]["inference_stats"]["success"]["count"]) >= 40


def test_async_bls_runs_concurrent_calls(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert _infer(client, "outer_async", 1.0)[0] == (1 + 2 + 3)


def test_bls_error_from_the_called_model_reaches_the_client(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="nosuch"):
        _infer(client, "outer", 1.0, parameters={"target": "nosuch"})
