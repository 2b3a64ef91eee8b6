"""The sequence batcher's control inputs and implicit state with an ONNX Runtime model, through
the real server with tritonclient.grpc: the server feeds START and STATE_IN, keeps STATE_OUT for
the sequence's next request and takes it out of the client's response."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

from tests.helpers import running_server


def write_accumulator(repository: Path, name: str, batch_dim: object, config: str | None) -> None:
    """OUTPUT = STATE_OUT = (0 if START else STATE_IN) + INPUT, on FP32 [batch_dim, 1] (or [1]
    when batch_dim is None). START (INT32) is used, so ONNX Runtime keeps it as an input."""
    shape = [1] if batch_dim is None else [batch_dim, 1]
    value_infos = {
        "INPUT": TensorProto.FLOAT,
        "STATE_IN": TensorProto.FLOAT,
        "START": TensorProto.INT32,
    }
    inputs = [helper.make_tensor_value_info(n, t, shape) for n, t in value_infos.items()]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("OUTPUT", "STATE_OUT")
    ]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Cast", ["START"], ["starting"], to=TensorProto.BOOL),
        helper.make_node("Where", ["starting", "zero", "STATE_IN"], ["previous"]),
        helper.make_node("Add", ["previous", "INPUT"], ["OUTPUT"]),
        helper.make_node("Identity", ["OUTPUT"], ["STATE_OUT"]),
    ]
    graph = helper.make_graph(nodes, "accumulator", inputs, outputs, initializer=[zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version_dir = repository / name / "1"
    version_dir.mkdir(parents=True)
    onnx.save(model, str(version_dir / "model.onnx"))
    if config is not None:
        (repository / name / "config.pbtxt").write_text(config)


SEQUENCE_BATCHING = """
sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }
  ]
  state [ {
    input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_FP32 dims: [ 1 ]
    initial_state { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true name: "zero" }
  } ]
}
"""

IO = """
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    repository = tmp_path_factory.mktemp("repo")
    # No batching: one sequence per instance, so two instances serve two sequences at once.
    write_accumulator(
        repository,
        "acc_onnx",
        None,
        'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        "instance_group [ { count: 2 kind: KIND_CPU } ]\n" + IO + SEQUENCE_BATCHING,
    )
    # Batching: both sequences share one instance, laid out by slot (null requests fill gaps).
    write_accumulator(
        repository,
        "acc_onnx_batched",
        "N",
        'platform: "onnxruntime_onnx"\nmax_batch_size: 2\n' + IO + SEQUENCE_BATCHING,
    )
    # Inputs and outputs left to auto-complete: the batcher's tensors must stay out of them.
    write_accumulator(
        repository,
        "acc_onnx_auto",
        None,
        'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        "instance_group [ { count: 2 kind: KIND_CPU } ]\n" + SEQUENCE_BATCHING,
    )
    # No config at all: auto-complete reads every graph tensor, as it always has.
    write_accumulator(repository, "plain_onnx", None, None)
    with running_server(repository) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        yield client
        client.close()


def send(client, model: str, value: float, sequence_id: int, **flags: bool):
    data = np.array([value], dtype=np.float32)
    if model == "acc_onnx_batched":
        data = data.reshape(1, 1)
    inputs = [grpcclient.InferInput("INPUT", list(data.shape), "FP32")]
    inputs[0].set_data_from_numpy(data)
    return client.infer(model, inputs, sequence_id=sequence_id, **flags)


@pytest.mark.parametrize("model", ["acc_onnx", "acc_onnx_batched", "acc_onnx_auto"])
def test_interleaved_sequences_accumulate_independently(server, model):
    steps = [
        (100, 1.0, {"sequence_start": True}),
        (200, 10.0, {"sequence_start": True}),
        (100, 2.0, {}),
        (200, 20.0, {}),
        (100, 3.0, {"sequence_end": True}),
        (200, 30.0, {"sequence_end": True}),
    ]
    totals: dict[int, list[float]] = {100: [], 200: []}
    for sequence_id, value, flags in steps:
        result = send(server, model, value, sequence_id, **flags)
        names = [output.name for output in result.get_response().outputs]
        assert names == ["OUTPUT"]  # STATE_OUT stays with the server
        totals[sequence_id].append(float(result.as_numpy("OUTPUT").reshape(-1)[0]))
    assert totals == {100: [1.0, 3.0, 6.0], 200: [10.0, 30.0, 60.0]}
    # A new sequence on an old ID starts from the initial state again.
    again = send(server, model, 5.0, 100, sequence_start=True, sequence_end=True)
    assert again.as_numpy("OUTPUT").reshape(-1).tolist() == [5.0]


def test_client_asking_for_output_by_name_still_accumulates(server):
    """The state output is fetched even when the client names only OUTPUT."""
    outputs = [grpcclient.InferRequestedOutput("OUTPUT")]
    totals = []
    for value, flags in ((4.0, {"sequence_start": True}), (6.0, {"sequence_end": True})):
        data = np.array([value], dtype=np.float32)
        inputs = [grpcclient.InferInput("INPUT", [1], "FP32")]
        inputs[0].set_data_from_numpy(data)
        result = server.infer("acc_onnx", inputs, outputs=outputs, sequence_id=7, **flags)
        assert [o.name for o in result.get_response().outputs] == ["OUTPUT"]
        totals.append(float(result.as_numpy("OUTPUT")[0]))
    assert totals == [4.0, 10.0]


def test_auto_complete_leaves_the_batcher_tensors_out(server):
    config = server.get_model_config("acc_onnx_auto").config
    assert [t.name for t in config.input] == ["INPUT"]
    assert [t.name for t in config.output] == ["OUTPUT"]


def test_model_without_sequence_batching_auto_completes_every_tensor(server):
    config = server.get_model_config("plain_onnx").config
    assert [t.name for t in config.input] == ["INPUT", "STATE_IN", "START"]
    assert [t.name for t in config.output] == ["OUTPUT", "STATE_OUT"]
    assert not config.HasField("sequence_batching")
