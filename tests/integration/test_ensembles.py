"""Ensembles through the real server with tritonclient: data flow over Python steps with a
fan-out and fan-in, concurrency of independent steps, a failing step, statistics, load-time
checks, and explicit-mode loading of composing models (and unloading their dependents)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import model_source, running_server, write_model

#: One Python model per arithmetic op, the op its name (tests/models/ensemble_step); each logs
#: when it starts and ends to REPO/timeline.txt so the test can see which steps overlapped.
STEP_MODEL_PY = model_source("ensemble_step")


def _step_config(name: str, two_inputs: bool = False) -> str:
    inputs = '{ name: "A" data_type: TYPE_FP32 dims: [ 4 ] }'
    if two_inputs:
        inputs += ', { name: "B" data_type: TYPE_FP32 dims: [ 4 ] }'
    return f"""
    name: "{name}"
    backend: "python"
    max_batch_size: 0
    input [ {inputs} ]
    output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
    """


# IN -> add_one -> T1 -> double -> DOUBLED --+-> sum -> OUT
#                  T1 -> square -> T3 -------+
PIPE_CONFIG = """
name: "pipe"
platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "DOUBLED" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [
  { model_name: "add_one" model_version: -1
    input_map { key: "A" value: "IN" } output_map { key: "Y" value: "T1" } },
  { model_name: "double" model_version: -1
    input_map { key: "A" value: "T1" } output_map { key: "Y" value: "DOUBLED" } },
  { model_name: "square" model_version: 1
    input_map { key: "A" value: "T1" } output_map { key: "Y" value: "T3" } },
  { model_name: "sum" model_version: -1
    input_map [ { key: "A" value: "DOUBLED" }, { key: "B" value: "T3" } ]
    output_map { key: "Y" value: "OUT" } }
] }
"""

BROKEN_PIPE_CONFIG = """
name: "broken_pipe"
platform: "ensemble"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [
  { model_name: "add_one" model_version: -1
    input_map { key: "A" value: "IN" } output_map { key: "Y" value: "T1" } },
  { model_name: "fails" model_version: -1
    input_map { key: "A" value: "T1" } output_map { key: "Y" value: "OUT" } }
] }
"""


# sum needs T2, which double makes from sum's own output T1.
LOOP_PIPE_CONFIG = """
name: "loop_pipe"
platform: "ensemble"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [
  { model_name: "sum" input_map [ { key: "A" value: "IN" }, { key: "B" value: "T2" } ]
    output_map { key: "Y" value: "T1" } },
  { model_name: "double" input_map { key: "A" value: "T1" } output_map { key: "Y" value: "T2" } },
  { model_name: "add_one" input_map { key: "A" value: "T1" } output_map { key: "Y" value: "OUT" } }
] }
"""


def _write_ensemble(repo: Path, name: str, config: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))


def _write_repo(repo: Path, with_ensembles: bool = True) -> None:
    for op in ("add_one", "double", "square", "sum", "fails"):
        write_model(repo, op, STEP_MODEL_PY, _step_config(op, op == "sum"))
    if with_ensembles:
        _write_ensemble(repo, "pipe", PIPE_CONFIG)
        _write_ensemble(repo, "broken_pipe", BROKEN_PIPE_CONFIG)


def _http_infer(client, model: str, values, outputs=None):
    tensor = httpclient.InferInput("IN", [4], "FP32")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float32))
    requested = [httpclient.InferRequestedOutput(name) for name in outputs] if outputs else None
    return client.infer(model, [tensor], outputs=requested)


def _index(client) -> dict[tuple[str, str], dict]:
    return {(e["name"], e.get("version", "")): e for e in client.get_model_repository_index()}


def _timeline(repo: Path) -> dict[str, tuple[float, float]]:
    spans = {}
    for line in (repo / "timeline.txt").read_text().splitlines():
        op, start, end = line.split()
        spans[op] = (float(start), float(end))
    return spans


def test_data_flows_through_fan_out_and_fan_in_with_parallel_steps(tmp_path: Path) -> None:
    _write_repo(tmp_path)
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        result = _http_infer(client, "pipe", [0, 1, 2, 3])
        # T1 = x+1 = [1,2,3,4]; DOUBLED = [2,4,6,8]; T3 = [1,4,9,16]; OUT = [3,8,15,24]
        np.testing.assert_array_equal(result.as_numpy("OUT"), [3, 8, 15, 24])
        np.testing.assert_array_equal(result.as_numpy("DOUBLED"), [2, 4, 6, 8])
        response = result.get_response()
        assert response["model_name"] == "pipe" and response["model_version"] == "1"
        # We do not echo sequence parameters on ensemble responses (Triton's wart 9).
        assert "parameters" not in response

        spans = _timeline(tmp_path)
        double, square = spans["double"], spans["square"]
        assert double[0] < square[1] and square[0] < double[1], "independent steps overlapped"
        assert spans["add_one"][1] <= min(double[0], square[0])  # after their input existed
        assert spans["sum"][0] >= max(double[1], square[1])  # after both its inputs

        # gRPC, asking for one output: the steps that only feed other outputs are pruned.
        (tmp_path / "timeline.txt").unlink()
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("IN", [4], "FP32")
        tensor.set_data_from_numpy(np.array([1, 1, 1, 1], dtype=np.float32))
        only = grpc.infer("pipe", [tensor], outputs=[grpcclient.InferRequestedOutput("DOUBLED")])
        np.testing.assert_array_equal(only.as_numpy("DOUBLED"), [4, 4, 4, 4])
        assert only.as_numpy("OUT") is None
        assert set(_timeline(tmp_path)) == {"add_one", "double"}

        # The ensemble counts each request once; composing models count their own runs.
        stats = {s["name"]: s for s in client.get_inference_statistics()["model_stats"]}
        assert stats["pipe"]["inference_stats"]["success"]["count"] == 2
        assert stats["pipe"]["execution_count"] == 2
        assert stats["add_one"]["inference_stats"]["success"]["count"] == 2
        assert stats["double"]["execution_count"] == 2
        assert stats["square"]["execution_count"] == 1
        assert stats["sum"]["execution_count"] == 1

        config = client.get_model_config("pipe")
        assert config["platform"] == "ensemble"
        assert config["instance_group"] == []
        assert [s["model_name"] for s in config["ensemble_scheduling"]["step"]] == [
            "add_one",
            "double",
            "square",
            "sum",
        ]
        metadata = client.get_model_metadata("pipe")
        assert metadata["platform"] == "ensemble"
        assert [o["name"] for o in metadata["outputs"]] == ["OUT", "DOUBLED"]


def test_a_failing_step_fails_the_request_with_its_message(tmp_path: Path) -> None:
    _write_repo(tmp_path)
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        with pytest.raises(InferenceServerException) as info:
            _http_infer(client, "broken_pipe", [0, 1, 2, 3])
        message = str(info.value)
        assert "in ensemble 'broken_pipe', step 'fails':" in message
        assert "bad things happened in fails" in message
        assert info.value.status() == "500"
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("IN", [4], "FP32")
        tensor.set_data_from_numpy(np.zeros(4, dtype=np.float32))
        with pytest.raises(InferenceServerException) as grpc_info:
            grpc.infer("broken_pipe", [tensor])
        assert grpc_info.value.status() == "StatusCode.INTERNAL"
        assert "step 'fails'" in grpc_info.value.message()
        stats = client.get_inference_statistics("broken_pipe")["model_stats"][0]
        assert stats["inference_stats"]["fail"]["count"] == 2
        assert stats["inference_stats"]["success"]["count"] == 0
        # The server keeps serving the working ensemble.
        np.testing.assert_array_equal(
            _http_infer(client, "pipe", [0, 0, 0, 0]).as_numpy("OUT"), [3, 3, 3, 3]
        )


def test_bad_ensembles_are_unavailable_with_the_reason(tmp_path: Path) -> None:
    _write_repo(tmp_path, with_ensembles=False)
    _write_ensemble(
        tmp_path,
        "typo_pipe",
        BROKEN_PIPE_CONFIG.replace("broken_pipe", "typo_pipe").replace('"fails"', '"nope"'),
    )
    _write_ensemble(
        tmp_path,
        "int_pipe",
        BROKEN_PIPE_CONFIG.replace("broken_pipe", "int_pipe").replace(
            '"IN" data_type: TYPE_FP32', '"IN" data_type: TYPE_INT32'
        ),
    )
    _write_ensemble(tmp_path, "loop_pipe", LOOP_PIPE_CONFIG)
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        index = _index(client)
        assert index[("typo_pipe", "1")]["state"] == "UNAVAILABLE"
        assert "ensemble 'typo_pipe' needs model 'nope'" in index[("typo_pipe", "1")]["reason"]
        assert "inconsistent data type: TYPE_INT32" in index[("int_pipe", "1")]["reason"]
        assert "a cycle in the ensemble graph" in index[("loop_pipe", "1")]["reason"]
        assert index[("add_one", "1")]["state"] == "READY"


def test_explicit_load_of_an_ensemble_loads_its_models_and_unload_dependents(
    tmp_path: Path,
) -> None:
    _write_repo(tmp_path)
    with running_server(tmp_path, model_control_mode="explicit") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert not client.is_model_ready("add_one")
        client.load_model("pipe")
        index = _index(client)
        for name in ("pipe", "add_one", "double", "square", "sum"):
            assert index[(name, "1")]["state"] == "READY", name
        assert ("fails", "") in index and "state" not in index[("fails", "")]  # not needed
        np.testing.assert_array_equal(
            _http_infer(client, "pipe", [0, 1, 2, 3]).as_numpy("OUT"), [3, 8, 15, 24]
        )

        # Without unload_dependents the ensemble stays loaded; its request names what is gone.
        client.unload_model("square")
        assert client.is_model_ready("pipe")
        with pytest.raises(InferenceServerException, match="in ensemble 'pipe', step 'square'"):
            _http_infer(client, "pipe", [0, 1, 2, 3])

        client.load_model("pipe")  # reloads square, which it needs
        assert client.is_model_ready("square")
        client.unload_model("add_one", unload_dependents=True)
        deadline = time.monotonic() + 10
        while client.is_model_ready("pipe") and time.monotonic() < deadline:
            time.sleep(0.05)
        index = _index(client)
        assert index[("pipe", "1")]["state"] == "UNAVAILABLE"
        assert index[("add_one", "1")]["state"] == "UNAVAILABLE"
        assert index[("double", "1")]["state"] == "READY"  # only dependents go, not siblings
