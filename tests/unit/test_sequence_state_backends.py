"""The framework backends' shared helpers and the sequence batcher's tensors: state outputs are
fetched and kept in every response (backends/batching.py), and control / state inputs and
outputs are neither required from clients nor auto-completed (backends/model_signature.py)."""

from __future__ import annotations

import numpy as np
import pytest

from trident.backends.batching import (
    Batch,
    fetched_output_names,
    make_response,
    output_specs,
    requested_output_names,
)
from trident.backends.model_signature import (
    ModelSignature,
    TensorSignature,
    check_config,
    complete_config,
)
from trident.runtime.core import model_config
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest, RequestedOutput

SEQUENCE = """
sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }
  ]
  state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
}
"""
IO = """
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def config_of(text: str) -> mc.ModelConfig:
    return model_config.parse_config_text('name: "m" max_batch_size: 0\n' + text)


def fp32(name: str) -> TensorSignature:
    return TensorSignature(name, mc.TYPE_FP32, (1,))


def signature(inputs=("INPUT", "STATE_IN", "START"), outputs=("OUTPUT", "STATE_OUT")):
    start = [TensorSignature("START", mc.TYPE_INT32, (1,))] if "START" in inputs else []
    return ModelSignature(
        [fp32(n) for n in inputs if n != "START"] + start,
        [fp32(n) for n in outputs],
        "model.onnx",
    )


def request(*outputs: str) -> InferenceRequest:
    return InferenceRequest(model_name="m", outputs=[RequestedOutput(n) for n in outputs])


def test_state_outputs_are_fetched_and_kept_whatever_the_client_names():
    config = config_of(IO + SEQUENCE)
    assert fetched_output_names(config) == ["OUTPUT", "STATE_OUT"]
    specs = output_specs(config)
    assert specs["STATE_OUT"].state and specs["STATE_OUT"].datatype == "FP32"
    assert not specs["OUTPUT"].state
    batch = Batch([0], {})
    names = requested_output_names([request("OUTPUT")], batch, ["OUTPUT", "STATE_OUT"])
    assert names == ["OUTPUT"]
    names = requested_output_names(
        [request("OUTPUT")], batch, ["OUTPUT", "STATE_OUT"], always=["STATE_OUT"]
    )
    assert names == ["OUTPUT", "STATE_OUT"]
    arrays = {"OUTPUT": np.ones(1, np.float32), "STATE_OUT": np.ones(1, np.float32)}
    response = make_response(request("OUTPUT"), arrays, specs, "m", 1, False)
    assert [t.name for t in response.outputs] == ["OUTPUT", "STATE_OUT"]


def test_without_state_only_named_outputs_are_kept():
    config = config_of(IO)
    assert fetched_output_names(config) == ["OUTPUT"]
    arrays = {"OUTPUT": np.ones(1, np.float32), "OTHER": np.ones(1, np.float32)}
    response = make_response(request("OUTPUT"), arrays, output_specs(config), "m", 1, False)
    assert [t.name for t in response.outputs] == ["OUTPUT"]


def test_check_config_does_not_ask_clients_for_batcher_inputs():
    check_config(config_of(IO + SEQUENCE), signature())
    with pytest.raises(ModelLoadError, match="needs input 'STATE_IN'"):
        check_config(config_of(IO), signature())


def test_check_config_names_batcher_tensors_the_model_lacks():
    with pytest.raises(ModelLoadError) as caught:
        check_config(config_of(IO + SEQUENCE), signature(("INPUT", "STATE_IN"), ("OUTPUT",)))
    message = str(caught.value)
    assert "sequence_batching feeds input 'START'" in message
    assert "state output 'STATE_OUT' is not an output of model.onnx" in message


def test_complete_config_leaves_batcher_tensors_out():
    config = config_of(SEQUENCE)
    complete_config(config, signature())
    assert [t.name for t in config.input] == ["INPUT"]
    assert [t.name for t in config.output] == ["OUTPUT"]
    plain = config_of("")
    complete_config(plain, signature())
    assert [t.name for t in plain.input] == ["INPUT", "STATE_IN", "START"]
    assert [t.name for t in plain.output] == ["OUTPUT", "STATE_OUT"]
