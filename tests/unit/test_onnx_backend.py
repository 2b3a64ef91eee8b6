"""The ONNX Runtime backend (backends/onnxruntime) and the shared helpers it is built on
(backends/batching.py, backends/model_signature.py), against ONNX Runtime called directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trident.backends.base import ComputeTiming, InstanceContext
from trident.backends.batching import Batch, form_batches, split_outputs
from trident.backends.onnxruntime.backend import OnnxRuntimeBackend
from trident.backends.onnxruntime.session_options import execution_providers
from trident.runtime.core import model_config
from trident.runtime.core.in_flight import InFlightRequest, validated
from trident.runtime.errors import (
    InvalidArgumentError,
    ModelExecutionError,
    ModelLoadError,
)
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest, RequestedOutput, Tensor, datatype_of_array

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND = OnnxRuntimeBackend()

# --------------------------------------------------------------------------------------------
# Helpers: build models with onnx.helper, load them the way the core does, make requests.


def save_model(
    model_dir: Path,
    nodes: list,
    inputs: list,
    outputs: list,
    initializers: list | None = None,
    **save_kwargs,
) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    path = model_dir / "1" / "model.onnx"
    onnx.save(model, str(path), **save_kwargs)
    return path


def affine_model(model_dir: Path, batch_dim: object = "N", dtype: int = TensorProto.FLOAT) -> Path:
    """y = x * 2 + 1 on [batch_dim, 4]."""
    x = helper.make_tensor_value_info("x", dtype, [batch_dim, 4])
    y = helper.make_tensor_value_info("y", dtype, [batch_dim, 4])
    two = helper.make_tensor("two", dtype, [], [2.0])
    one = helper.make_tensor("one", dtype, [], [1.0])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["y"]),
    ]
    return save_model(model_dir, nodes, [x], [y], [two, one])


def load_config(model_dir: Path, text: str = "", strict: bool = False) -> mc.ModelConfig:
    config = model_config.parse_config_text(text)
    model_config.normalize(config, model_dir.name, "onnxruntime")
    BACKEND.auto_complete_config(config, model_dir, strict)
    model_config.validate(config)
    return config


def make_instance(config: mc.ModelConfig, model_dir: Path, kind: str = "CPU", device_id: int = 0):
    context = InstanceContext(
        config=config,
        model_name=config.name,
        model_version=1,
        model_dir=model_dir,
        version_dir=model_dir / "1",
        instance_name=f"{config.name}_0",
        kind=kind,
        device_id=device_id,
    )
    return BACKEND.create_instance(context)


def make_request(outputs: tuple[str, ...] = (), **arrays: np.ndarray) -> InFlightRequest:
    tensors = [
        Tensor(name, datatype_of_array(array), tuple(array.shape), array)
        for name, array in arrays.items()
    ]
    request = InferenceRequest(
        model_name="m", inputs=tensors, outputs=[RequestedOutput(name) for name in outputs]
    )
    return validated(request, 1)


def outputs_of(response) -> dict[str, np.ndarray]:
    assert response.error is None, response.error
    return {tensor.name: tensor.data for tensor in response.outputs}


def direct(path: Path, **feeds: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


class CountingSession:
    """Wraps an InferenceSession to count `run` calls and record the outputs asked for."""

    def __init__(self, session) -> None:
        self.session = session
        self.calls: list[list[str]] = []

    def run(self, names, feeds, options=None):
        self.calls.append(list(names))
        return self.session.run(names, feeds, options)


def counting(instance) -> CountingSession:
    spy = CountingSession(instance._session)
    instance._session = spy
    return spy


# --------------------------------------------------------------------------------------------
# Auto-complete.


def test_autocomplete_without_config_fills_io_batching_and_scheduler(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(model_dir)
    assert config.max_batch_size == 4  # Triton's default-max-batch-size
    assert config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("x", mc.TYPE_FP32, [4])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("y", mc.TYPE_FP32, [4])
    ]
    assert config.platform == "onnxruntime_onnx"


def test_autocomplete_keeps_configured_max_batch_size_and_scheduler(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(model_dir, "max_batch_size: 16\nsequence_batching {}")
    assert config.max_batch_size == 16
    assert not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [4]


def test_autocomplete_fixed_first_dim_does_not_batch(tmp_path):
    model_dir = tmp_path / "fixed"
    affine_model(model_dir, batch_dim=2)
    config = load_config(model_dir)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [2, 4]
    assert not config.HasField("dynamic_batching")


def test_autocomplete_rejects_batching_a_model_that_cannot(tmp_path):
    model_dir = tmp_path / "fixed"
    affine_model(model_dir, batch_dim=2)
    with pytest.raises(ModelLoadError, match=r"max_batch_size 8 but model\.onnx cannot batch"):
        load_config(model_dir, "max_batch_size: 8")


def test_autocomplete_fills_only_missing_outputs(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(
        model_dir, 'max_batch_size: 2\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]'
    )
    assert [t.name for t in config.output] == ["y"]
    assert config.max_batch_size == 2


def test_autocomplete_keeps_no_batching_when_dims_spell_the_full_shape(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(model_dir, 'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]')
    assert config.max_batch_size == 0  # Triton would set 4 here and then reject dims [-1, 4]
    assert list(config.output[0].dims) == [-1, 4]


def test_autocomplete_checks_the_part_the_config_gives(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    with pytest.raises(ModelLoadError, match=r"config\.pbtxt says input 'x' is TYPE_INT32"):
        load_config(model_dir, 'input [ { name: "x" data_type: TYPE_INT32 dims: [ 4 ] } ]')


def test_scalar_gets_dims_one_and_an_empty_reshape(tmp_path):
    model_dir = tmp_path / "total"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [])
    node = helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)
    save_model(model_dir, [node], [x], [s])
    config = load_config(model_dir)
    output = config.output[0]
    assert list(output.dims) == [1] and output.HasField("reshape")
    assert list(output.reshape.shape) == []
    response = make_instance(config, model_dir).execute(
        [make_request(x=np.array([1, 2, 3], np.float32))], ComputeTiming()
    )[0]
    result = outputs_of(response)["s"]
    assert result.shape == (1,) and result[0] == 6  # the config's dims, not the model's scalar


def test_autocomplete_reads_the_highest_version(tmp_path):
    model_dir = tmp_path / "versions"
    affine_model(model_dir)
    (model_dir / "1").rename(model_dir / "3")
    (model_dir / "2").mkdir()  # an empty version folder is skipped
    assert load_config(model_dir).input[0].name == "x"


def test_autocomplete_without_model_file_says_so(tmp_path):
    model_dir = tmp_path / "empty"
    (model_dir / "1").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=r"no version folder .* holds model\.onnx"):
        load_config(model_dir)


def test_autocomplete_rejects_a_corrupt_file(tmp_path):
    model_dir = tmp_path / "corrupt"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(b"\x08\x07not an onnx model")
    with pytest.raises(ModelLoadError, match=r"cannot read .*model\.onnx"):
        load_config(model_dir)


COMPLETE = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def test_complete_config_is_left_alone(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(model_dir, COMPLETE)
    assert not config.HasField("dynamic_batching")  # Triton leaves complete configs alone


# --------------------------------------------------------------------------------------------
# Strict mode and consistency checks.


def test_strict_refuses_an_incomplete_config_and_suggests_one(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    with pytest.raises(ModelLoadError) as info:
        load_config(model_dir, "", strict=True)
    message = str(info.value)
    assert "strict model config" in message
    assert 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]' in message
    assert "max_batch_size: 4" in message


def test_strict_accepts_a_complete_consistent_config(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(model_dir, COMPLETE, strict=True)
    assert not config.HasField("dynamic_batching")  # strict: nothing filled


def test_strict_names_the_mismatch(tmp_path):
    model_dir = tmp_path / "half"
    affine_model(model_dir, dtype=TensorProto.FLOAT16)
    with pytest.raises(ModelLoadError) as info:
        load_config(model_dir, COMPLETE, strict=True)
    message = str(info.value)
    assert "config.pbtxt says input 'x' is TYPE_FP32 dims [4] with max_batch_size 4" in message
    assert "model.onnx has tensor(float16) [-1, 4]" in message
    assert "output 'y'" in message


def test_strict_names_missing_and_unknown_tensors(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    text = COMPLETE.replace('name: "x"', 'name: "z"')
    with pytest.raises(ModelLoadError) as info:
        load_config(model_dir, text, strict=True)
    message = str(info.value)
    assert "declares input 'z' but model.onnx has no such input (its inputs: 'x')" in message
    assert "model.onnx needs input 'x'" in message


def test_strict_dims_mismatch_hints_at_the_batch_dimension(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    text = COMPLETE.replace("max_batch_size: 4", "max_batch_size: 0")
    with pytest.raises(ModelLoadError, match="set max_batch_size > 0, or add -1 in front of dims"):
        load_config(model_dir, text, strict=True)


def test_instance_checks_a_complete_config_against_the_model(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    wrong_dims = COMPLETE.replace(
        '"x" data_type: TYPE_FP32 dims: [ 4 ]', '"x" data_type: TYPE_FP32 dims: [ 5 ]'
    )
    assert wrong_dims != COMPLETE
    config = load_config(model_dir, wrong_dims)
    with pytest.raises(ModelLoadError, match=r"input 'x' is TYPE_FP32 dims \[5\]"):
        make_instance(config, model_dir)


# --------------------------------------------------------------------------------------------
# Execution.


def test_batches_requests_into_one_run_and_splits_outputs(tmp_path):
    model_dir = tmp_path / "affine"
    path = affine_model(model_dir)
    config = load_config(model_dir)
    instance = make_instance(config, model_dir)
    spy = counting(instance)
    inputs = [np.random.rand(n, 4).astype(np.float32) for n in (1, 2, 1)]
    timing = ComputeTiming()
    responses = instance.execute([make_request(x=x) for x in inputs], timing)
    assert len(spy.calls) == 1
    for x, response in zip(inputs, responses):
        got = outputs_of(response)["y"]
        np.testing.assert_allclose(got, direct(path, x=x)[0])
        assert response.outputs[0].datatype == "FP32"
        assert response.outputs[0].shape == x.shape
    assert 0 < timing.input_end_ns <= timing.output_start_ns


def test_requests_with_different_variable_dims_run_separately(tmp_path):
    model_dir = tmp_path / "rowsum"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 1])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    path = save_model(model_dir, [node], [x], [s], [axes])
    config = load_config(model_dir)
    assert list(config.input[0].dims) == [-1]
    instance = make_instance(config, model_dir)
    spy = counting(instance)
    inputs = [np.ones((1, 3), np.float32), np.ones((2, 5), np.float32), np.ones((1, 3), np.float32)]
    responses = instance.execute([make_request(x=x) for x in inputs], ComputeTiming())
    assert len(spy.calls) == 2  # the two length-3 requests together, the length-5 one alone
    for x, response in zip(inputs, responses):
        np.testing.assert_allclose(outputs_of(response)["s"], direct(path, x=x)[0])


def mixed_types_model(model_dir: Path) -> Path:
    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT16, ["N", 3]),
        helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3]),
        helper.make_tensor_value_info("c", TensorProto.BOOL, ["N", 3]),
    ]
    outputs = [
        helper.make_tensor_value_info("a2", TensorProto.FLOAT16, ["N", 3]),
        helper.make_tensor_value_info("b2", TensorProto.INT64, ["N", 3]),
        helper.make_tensor_value_info("not_c", TensorProto.BOOL, ["N", 3]),
    ]
    nodes = [
        helper.make_node("Add", ["a", "a"], ["a2"]),
        helper.make_node("Mul", ["b", "b"], ["b2"]),
        helper.make_node("Not", ["c"], ["not_c"]),
    ]
    return save_model(model_dir, nodes, inputs, outputs)


def test_fp16_int64_bool_multiple_inputs_and_outputs(tmp_path):
    model_dir = tmp_path / "mixed"
    path = mixed_types_model(model_dir)
    config = load_config(model_dir)
    assert [t.data_type for t in config.input] == [mc.TYPE_FP16, mc.TYPE_INT64, mc.TYPE_BOOL]
    instance = make_instance(config, model_dir)
    rng = np.random.default_rng(0)
    feeds = [
        {
            "a": rng.random((n, 3)).astype(np.float16),
            "b": rng.integers(-(2**40), 2**40, (n, 3), dtype=np.int64),
            "c": rng.random((n, 3)) > 0.5,
        }
        for n in (2, 1)
    ]
    responses = instance.execute([make_request(**f) for f in feeds], ComputeTiming())
    for feed, response in zip(feeds, responses):
        got = outputs_of(response)
        want = direct(path, **feed)
        for name, expected in zip(("a2", "b2", "not_c"), want):
            np.testing.assert_array_equal(got[name], expected)
            assert got[name].dtype == expected.dtype
        assert [t.datatype for t in response.outputs] == ["FP16", "INT64", "BOOL"]


def test_only_requested_outputs_are_fetched_and_returned(tmp_path):
    model_dir = tmp_path / "mixed"
    mixed_types_model(model_dir)
    instance = make_instance(load_config(model_dir), model_dir)
    spy = counting(instance)
    feed = {
        "a": np.ones((1, 3), np.float16),
        "b": np.ones((1, 3), np.int64),
        "c": np.ones((1, 3), bool),
    }
    response = instance.execute([make_request(outputs=("b2",), **feed)], ComputeTiming())[0]
    assert spy.calls == [["b2"]]
    assert list(outputs_of(response)) == ["b2"]


def string_model(model_dir: Path) -> Path:
    x = helper.make_tensor_value_info("text", TensorProto.STRING, ["N", 2])
    y = helper.make_tensor_value_info("same", TensorProto.STRING, ["N", 2])
    return save_model(model_dir, [helper.make_node("Identity", ["text"], ["same"])], [x], [y])


def test_bytes_tensors_round_trip_as_bytes(tmp_path):
    model_dir = tmp_path / "strings"
    path = string_model(model_dir)
    config = load_config(model_dir)
    assert config.input[0].data_type == mc.TYPE_STRING
    instance = make_instance(config, model_dir)
    first = np.array([[b"hello", "wörld".encode()]], dtype=np.object_)
    second = np.array([[b"a", b""], [b"b", b"c"]], dtype=np.object_)
    responses = instance.execute(
        [make_request(text=first), make_request(text=second)], ComputeTiming()
    )
    for sent, response in zip((first, second), responses):
        tensor = response.outputs[0]
        assert tensor.datatype == "BYTES"
        assert tensor.data.tolist() == sent.tolist()
    # ONNX Runtime itself, fed str: the same text.
    expected = direct(path, text=np.array([["hello", "wörld"]], dtype=np.object_))[0]
    assert [s.encode() for s in expected.ravel()] == first.ravel().tolist()


def test_non_utf8_bytes_fail_only_their_request(tmp_path):
    model_dir = tmp_path / "strings"
    string_model(model_dir)
    instance = make_instance(load_config(model_dir), model_dir)
    spy = counting(instance)
    bad = np.array([[b"\xff\xfe", b"x"]], dtype=np.object_)
    good = np.array([[b"ok", b"fine"], [b"a", b"b"]], dtype=np.object_)
    bad_response, good_response = instance.execute(
        [make_request(text=bad), make_request(text=good)], ComputeTiming()
    )
    assert isinstance(bad_response.error, InvalidArgumentError)
    assert "not valid UTF-8" in str(bad_response.error)
    # The bad request is refused before batching, so its batch-mate still runs.
    assert outputs_of(good_response)["same"].tolist() == good.tolist()
    assert len(spy.calls) == 1


def test_a_failing_batch_does_not_fail_the_others(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    instance = make_instance(load_config(model_dir), model_dir)
    # Shape [1, 5] slips past no core validation here; ONNX Runtime rejects it.
    bad = make_request(x=np.ones((1, 5), np.float32))
    good = make_request(x=np.ones((1, 4), np.float32))
    bad_response, good_response = instance.execute([bad, good], ComputeTiming())
    assert isinstance(bad_response.error, InvalidArgumentError)
    np.testing.assert_allclose(outputs_of(good_response)["y"], np.full((1, 4), 3, np.float32))


def test_optional_input_with_a_default(tmp_path):
    model_dir = tmp_path / "scaled"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    default = helper.make_tensor("w", TensorProto.FLOAT, [1], [10.0])
    save_model(model_dir, [helper.make_node("Mul", ["x", "w"], ["y"])], [x, w], [y], [default])
    # w has no batch dimension, so this model cannot batch as a whole: max_batch_size 0.
    config = load_config(
        model_dir,
        """
        input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 2 ] },
                { name: "w" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 2 ] } ]
        """,
    )
    instance = make_instance(config, model_dir)
    x_value = np.ones((1, 2), np.float32)
    default_response, override_response = instance.execute(
        [make_request(x=x_value), make_request(x=x_value, w=np.array([3.0], np.float32))],
        ComputeTiming(),
    )
    np.testing.assert_allclose(outputs_of(default_response)["y"], [[10, 10]])
    np.testing.assert_allclose(outputs_of(override_response)["y"], [[3, 3]])


def test_external_data_in_the_version_folder_loads(tmp_path):
    model_dir = tmp_path / "external"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
    weights = np.arange(64, dtype=np.float32)
    initializer = numpy_helper.from_array(weights, "w")  # raw data, which can live outside
    path = save_model(
        model_dir,
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [x],
        [y],
        [initializer],
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (model_dir / "1" / "weights.bin").stat().st_size == 64 * 4
    instance = make_instance(load_config(model_dir), model_dir)
    x_value = np.ones((2, 64), np.float32)
    got = outputs_of(instance.execute([make_request(x=x_value)], ComputeTiming())[0])["y"]
    np.testing.assert_allclose(got, x_value + weights)
    np.testing.assert_allclose(got, direct(path, x=x_value)[0])


def test_model_onnx_may_be_a_folder(tmp_path):
    model_dir = tmp_path / "folder"
    path = affine_model(model_dir)
    inner = model_dir / "1" / "model.onnx.tmp"
    path.rename(inner)
    path.mkdir()
    inner.rename(path / "model.onnx")
    instance = make_instance(load_config(model_dir), model_dir)
    response = instance.execute([make_request(x=np.zeros((1, 4), np.float32))], ComputeTiming())[0]
    np.testing.assert_allclose(outputs_of(response)["y"], np.ones((1, 4)))


# --------------------------------------------------------------------------------------------
# Session options and execution providers.


def test_session_options_from_parameters(tmp_path):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(
        model_dir,
        """
        parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
        parameters { key: "inter_op_thread_count" value: { string_value: "2" } }
        parameters { key: "execution_mode" value: { string_value: "1" } }
        parameters { key: "enable_mem_pattern" value: { string_value: "false" } }
        parameters { key: "memory.enable_memory_arena_shrinkage" value: { string_value: "cpu:0" } }
        optimization { graph { level: 2 } }
        """,
    )
    instance = make_instance(config, model_dir)
    options = instance._session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 2
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.enable_mem_pattern is False
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert instance._run_options is not None
    response = instance.execute([make_request(x=np.zeros((1, 4), np.float32))], ComputeTiming())[0]
    assert response.error is None


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ('key: "execution_mode" value: { string_value: "2" }', "execution_mode"),
        ('key: "intra_op_thread_count" value: { string_value: "many" }', "must be an integer"),
        ('key: "enable_mem_arena" value: { string_value: "maybe" }', "true or false"),
    ],
)
def test_bad_parameters_fail_the_load(tmp_path, parameter, message):
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(model_dir, f"parameters {{ {parameter} }}")
    with pytest.raises(ModelLoadError, match=message):
        make_instance(config, model_dir)


def test_gpu_instance_without_cuda_provider_names_the_package(tmp_path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has the CUDA provider")
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(model_dir)
    with pytest.raises(ModelLoadError, match="onnxruntime-gpu") as info:
        make_instance(config, model_dir, kind="GPU")
    assert "CUDAExecutionProvider" in str(info.value)


def test_openvino_accelerator_without_openvino_names_the_package(tmp_path):
    if "OpenVINOExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has OpenVINO")
    model_dir = tmp_path / "affine"
    affine_model(model_dir)
    config = load_config(
        model_dir,
        "optimization { execution_accelerators { "
        'cpu_execution_accelerator: [ { name: "openvino" } ] } }',
    )
    with pytest.raises(ModelLoadError, match="onnxruntime-openvino"):
        make_instance(config, model_dir)


def accelerator_config(text: str) -> mc.ModelConfig:
    return model_config.parse_config_text(f"optimization {{ execution_accelerators {{ {text} }} }}")


def test_provider_order_and_options_for_a_gpu_instance():
    config = accelerator_config(
        """gpu_execution_accelerator: [
             { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" }
                                parameters { key: "max_workspace_size_bytes" value: "1073741824" }
                                parameters { key: "trt_engine_cache_enable" value: "1" } },
             { name: "cuda" parameters { key: "cudnn_conv_use_max_workspace" value: "0" } } ]"""
    )
    config.parameters["gpu_mem_limit"].string_value = "1000"
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = execution_providers(config, "GPU", 3, available, "m_0")
    assert [name for name, _ in providers] == available
    trt_options, cuda_options, cpu_options = (options for _, options in providers)
    assert trt_options == {
        "trt_fp16_enable": "True",
        "trt_max_workspace_size": "1073741824",
        "trt_engine_cache_enable": "1",
        "device_id": "3",
    }
    assert cuda_options == {
        "cudnn_conv_use_max_workspace": "0",
        "gpu_mem_limit": "1000",
        "device_id": "3",
    }
    assert cpu_options == {}


def test_cpu_instances_ignore_gpu_accelerators():
    config = accelerator_config('gpu_execution_accelerator: [ { name: "tensorrt" } ]')
    providers = execution_providers(config, "CPU", 0, ["CPUExecutionProvider"], "m_0")
    assert providers == [("CPUExecutionProvider", {})]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('gpu_execution_accelerator: [ { name: "magic" } ]', "unknown gpu_execution_accelerator"),
        ('cpu_execution_accelerator: [ { name: "magic" } ]', "unknown cpu_execution_accelerator"),
        (
            'gpu_execution_accelerator: [ { name: "tensorrt" '
            'parameters { key: "x" value: "1" } } ]',
            "unknown parameter 'x'",
        ),
    ],
)
def test_unknown_accelerators_fail(text, message):
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ModelLoadError, match=message):
        execution_providers(accelerator_config(text), "GPU", 0, available, "m_0")


def test_bf16_is_refused_with_a_reason(tmp_path):
    model_dir = tmp_path / "bf16"
    x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2])
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2])
    save_model(model_dir, [helper.make_node("Identity", ["x"], ["y"])], [x], [y])
    config = load_config(model_dir)
    assert config.input[0].data_type == mc.TYPE_BF16
    with pytest.raises(ModelLoadError, match="TYPE_BF16"):
        make_instance(config, model_dir)


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu and a CUDA GPU",
)
def test_gpu_instance_runs_on_cuda(tmp_path):
    model_dir = tmp_path / "affine"
    path = affine_model(model_dir)
    instance = make_instance(load_config(model_dir), model_dir, kind="GPU")
    assert instance._session.get_providers()[0] == "CUDAExecutionProvider"
    x = np.random.rand(3, 4).astype(np.float32)
    got = outputs_of(instance.execute([make_request(x=x)], ComputeTiming())[0])["y"]
    np.testing.assert_allclose(got, direct(path, x=x)[0], rtol=1e-6)


# --------------------------------------------------------------------------------------------
# The shared batching helpers on their own.


def test_form_batches_without_batching_keeps_requests_apart():
    requests = [make_request(x=np.ones((2, 4), np.float32)) for _ in range(3)]
    batches = form_batches(requests, batched=False)
    assert [b.indices for b in batches] == [[0], [1], [2]]
    assert batches[0].inputs["x"] is requests[0].inputs[0].data  # no copy


def test_form_batches_groups_by_everything_but_the_first_dim():
    requests = [
        make_request(x=np.ones((1, 4), np.float32)),
        make_request(x=np.ones((1, 5), np.float32)),
        make_request(x=np.ones((3, 4), np.float32)),
        make_request(x=np.ones((1, 4), np.float32), w=np.ones((1, 1), np.float32)),
    ]
    batches = form_batches(requests, batched=True)
    assert [b.indices for b in batches] == [[0, 2], [1], [3]]
    assert batches[0].inputs["x"].shape == (4, 4)
    assert batches[0].batch_sizes == [1, 3]


def test_split_outputs_returns_views_and_checks_the_batch_dim():
    batch = Batch([0, 1], {}, [1, 2])
    output = np.arange(6).reshape(3, 2)
    first, second = split_outputs(batch, {"y": output})
    assert first["y"].tolist() == [[0, 1]] and second["y"].tolist() == [[2, 3], [4, 5]]
    assert np.shares_memory(second["y"], output)
    with pytest.raises(ModelExecutionError, match="should be the batch size 3"):
        split_outputs(batch, {"y": np.zeros((2, 2))})


# --------------------------------------------------------------------------------------------
# The example in model_repository/.


def test_simple_onnx_example_loads_and_computes_2x_plus_1():
    model_dir = REPO_ROOT / "model_repository" / "simple_onnx"
    config = load_config(model_dir)
    assert config.max_batch_size > 0
    instance = make_instance(config, model_dir)
    assert [t.name for t in config.input] == ["INPUT0"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = outputs_of(instance.execute([make_request(INPUT0=x)], ComputeTiming())[0])
    np.testing.assert_allclose(got["OUTPUT0"], x * 2 + 1)
