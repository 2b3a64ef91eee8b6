"""Unload as Triton answers it: idempotent, and `unload_dependents` takes an ensemble's
composing models with it when they were loaded only for it (through tritonclient, both
protocols)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import IDENTITY_MODEL_PY, identity_config, running_server, write_model


def _step(model: str, source: str, target: str) -> str:
    return (
        f'{{ model_name: "{model}" model_version: -1 '
        f'input_map {{ key: "INPUT0" value: "{source}" }} '
        f'output_map {{ key: "OUTPUT0" value: "{target}" }} }}'
    )


def _ensemble(repo: Path, name: str, steps: list[str]) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        f"ensemble_scheduling {{ step [ {', '.join(steps)} ] }}\n"
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """chain = first -> second; other = second; outer = chain (an ensemble of an ensemble)."""
    for name in ("first", "second", "third"):
        write_model(tmp_path, name, IDENTITY_MODEL_PY, identity_config(name))
    _ensemble(
        tmp_path, "chain", [_step("first", "INPUT0", "mid"), _step("second", "mid", "OUTPUT0")]
    )
    _ensemble(tmp_path, "other", [_step("second", "INPUT0", "OUTPUT0")])
    _ensemble(tmp_path, "outer", [_step("chain", "INPUT0", "a"), _step("third", "a", "OUTPUT0")])
    return tmp_path


class _Client:
    """The same calls over either protocol."""

    def __init__(self, protocol: str, server) -> None:
        module = httpclient if protocol == "http" else grpcclient
        url = server.http_url if protocol == "http" else server.grpc_url
        self.client = module.InferenceServerClient(url)

    def ready(self) -> set[str]:
        names = ("first", "second", "third", "chain", "other", "outer")
        return {name for name in names if self.client.is_model_ready(name)}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unloading_unknown_or_unloaded_models_succeeds(repo: Path, protocol: str) -> None:
    with running_server(repo, model_control_mode="explicit", startup_models=["first"]) as server:
        client = _Client(protocol, server).client
        client.unload_model("no_such_model")  # never existed: success, as Triton
        client.unload_model("second")  # on disk, never loaded
        client.unload_model("first")
        client.unload_model("first")  # already unloaded
        client.unload_model("no_such_model", unload_dependents=True)
        assert not client.is_model_ready("first")
        with pytest.raises(InferenceServerException, match="control characters") as raised:
            client.unload_model("first\x01")  # invalid names are still refused
        assert raised.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unload_dependents_takes_the_composing_models_loaded_for_the_ensemble(
    repo: Path, protocol: str
) -> None:
    with running_server(repo, model_control_mode="explicit") as server:
        wrapper = _Client(protocol, server)
        client = wrapper.client

        # Without the parameter the composing models stay loaded.
        client.load_model("chain")
        assert wrapper.ready() == {"chain", "first", "second"}
        client.unload_model("chain")
        assert wrapper.ready() == {"first", "second"}
        client.unload_model("first")
        client.unload_model("second")

        # With it, those loaded only for the ensemble go too.
        client.load_model("chain")
        client.unload_model("chain", unload_dependents=True)
        assert wrapper.ready() == set()

        # A model someone loaded on purpose stays.
        client.load_model("second")
        client.load_model("chain")
        client.unload_model("chain", unload_dependents=True)
        assert wrapper.ready() == {"second"}
        client.unload_model("second")

        # A model another loaded ensemble still calls stays, until that one goes.
        client.load_model("chain")
        client.load_model("other")
        client.unload_model("chain", unload_dependents=True)
        assert wrapper.ready() == {"other", "second"}
        client.unload_model("other", unload_dependents=True)
        assert wrapper.ready() == set()

        # Nested ensembles: the inner ensemble and its own composing models go as well.
        client.load_model("outer")
        assert wrapper.ready() == {"outer", "chain", "first", "second", "third"}
        client.unload_model("outer", unload_dependents=True)
        assert wrapper.ready() == set()
