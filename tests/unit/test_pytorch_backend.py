"""The PyTorch backend (backends/pytorch): TorchScript (model.pt) and torch.export programs
(model.pt2), against the same modules called directly."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from trident.backends.base import ComputeTiming, InstanceContext
from trident.backends.pytorch.backend import PyTorchBackend
from trident.backends.pytorch.naming import (
    CONFIG_ORDER,
    DICT_KEY,
    FORWARD_ARGUMENT,
    NAMED_INDEX,
    bind_inputs,
    bind_outputs,
)
from trident.runtime.core import model_config
from trident.runtime.core.in_flight import InFlightRequest, validated
from trident.runtime.errors import ModelExecutionError, ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest, RequestedOutput, Tensor, datatype_of_array

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND = PyTorchBackend()

# --------------------------------------------------------------------------------------------
# Modules under test.


class AddMul(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + y, x * y


class Affine(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1


class RowSum(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)


class Mixed(torch.nn.Module):
    """FP16, INT64 and BOOL in and out."""

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return a * 2, b * b, torch.logical_not(c)


class Scaled(torch.nn.Module):
    def forward(self, x: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045 - TorchScript wants Optional
        if scale is None:
            return x
        return x * scale


class Named(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "negated": -x}


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


# --------------------------------------------------------------------------------------------
# Helpers.


def save_torchscript(model_dir: Path, module: torch.nn.Module, *example: torch.Tensor) -> Path:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    path = model_dir / "1" / "model.pt"
    scripted = torch.jit.trace(module.eval(), example) if example else torch.jit.script(module)
    torch.jit.save(scripted, str(path))
    return path


def save_export(
    model_dir: Path, module: torch.nn.Module, example: tuple, dynamic_shapes=None
) -> Path:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    path = model_dir / "1" / "model.pt2"
    program = torch.export.export(module.eval(), example, dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(path))
    return path


def load_config(model_dir: Path, text: str = "", strict: bool = False) -> mc.ModelConfig:
    config = model_config.parse_config_text(text)
    model_config.normalize(config, model_dir.name, "pytorch")
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


def run(instance, *requests: InFlightRequest):
    return instance.execute(list(requests), ComputeTiming())


def outputs_of(response) -> dict[str, np.ndarray]:
    assert response.error is None, response.error
    return {tensor.name: tensor.data for tensor in response.outputs}


class CountingModule:
    """Stands in for the instance's module to count calls."""

    def __init__(self, module) -> None:
        self.module = module
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


def counting(instance) -> CountingModule:
    spy = CountingModule(instance._module)
    instance._module = spy
    return spy


ADD_MUL_INDEXED = """
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3 ] },
        { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] },
         { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""

# --------------------------------------------------------------------------------------------
# TorchScript.


def test_torchscript_named_index_batches_and_matches_torch(tmp_path):
    model_dir = tmp_path / "add_mul"
    path = save_torchscript(model_dir, AddMul(), torch.ones(2, 3), torch.ones(2, 3))
    instance = make_instance(load_config(model_dir, ADD_MUL_INDEXED), model_dir)
    spy = counting(instance)
    feeds = [
        {
            "INPUT__0": np.random.rand(n, 3).astype(np.float32),
            "INPUT__1": np.random.rand(n, 3).astype(np.float32),
        }
        for n in (1, 3, 2)
    ]
    timing = ComputeTiming()
    responses = instance.execute([make_request(**f) for f in feeds], timing)
    assert spy.calls == 1  # one batch of 6 rows
    module = torch.jit.load(str(path))
    for feed, response in zip(feeds, responses):
        got = outputs_of(response)
        added, multiplied = module(
            torch.from_numpy(feed["INPUT__0"]), torch.from_numpy(feed["INPUT__1"])
        )
        np.testing.assert_allclose(got["OUTPUT__0"], added.numpy())
        np.testing.assert_allclose(got["OUTPUT__1"], multiplied.numpy())
        assert [t.datatype for t in response.outputs] == ["FP32", "FP32"]
    assert 0 < timing.input_end_ns <= timing.output_start_ns


def test_torchscript_forward_argument_names_in_any_order(tmp_path):
    model_dir = tmp_path / "add_mul"
    save_torchscript(model_dir, AddMul())  # scripted: argument names x, y
    config = load_config(
        model_dir,
        """
        input [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] },
                { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "sum" data_type: TYPE_FP32 dims: [ 2 ] },
                 { name: "product" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    )
    instance = make_instance(config, model_dir)
    assert instance._inputs.convention == FORWARD_ARGUMENT
    assert instance._outputs.convention == CONFIG_ORDER
    x, y = np.array([1, 2], np.float32), np.array([10, 20], np.float32)
    got = outputs_of(run(instance, make_request(x=x, y=y))[0])
    np.testing.assert_allclose(got["sum"], [11, 22])
    np.testing.assert_allclose(got["product"], [10, 40])


def test_torchscript_config_order_when_names_follow_no_convention(tmp_path):
    model_dir = tmp_path / "add_mul"
    save_torchscript(model_dir, AddMul(), torch.ones(2), torch.ones(2))
    config = load_config(
        model_dir,
        """
        input [ { name: "first" data_type: TYPE_FP32 dims: [ 2 ] },
                { name: "second" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    )
    instance = make_instance(config, model_dir)
    first, second = np.array([2, 3], np.float32), np.array([4, 5], np.float32)
    got = outputs_of(run(instance, make_request(first=first, second=second))[0])
    assert list(got) == ["OUTPUT__1"]  # only the second result is declared
    np.testing.assert_allclose(got["OUTPUT__1"], [8, 15])


def test_torchscript_without_config_says_what_to_declare(tmp_path):
    model_dir = tmp_path / "add_mul"
    save_torchscript(model_dir, AddMul())
    with pytest.raises(ModelLoadError) as info:
        load_config(model_dir)
    message = str(info.value)
    assert "TorchScript, which records no data types or shapes" in message
    assert "inputs and outputs" in message
    assert "forward(x, y)" in message
    assert 'input [ { name: "x" data_type: TYPE_FP32 dims: [ ... ] }' in message
    assert '{ name: "OUTPUT__0"' in message


def test_torchscript_with_inputs_only_asks_for_outputs(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    with pytest.raises(ModelLoadError, match="declare the model's outputs") as info:
        load_config(model_dir, 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]')
    assert "model's inputs" not in str(info.value)


def test_torchscript_strict_incomplete_config_fails_the_same_way(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    with pytest.raises(ModelLoadError, match="must declare the model's inputs and outputs"):
        load_config(model_dir, "", strict=True)


def test_torchscript_optional_argument_with_a_default(tmp_path):
    model_dir = tmp_path / "scaled"
    save_torchscript(model_dir, Scaled())
    config = load_config(
        model_dir,
        """
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] },
                { name: "scale" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    )
    instance = make_instance(config, model_dir)
    x = np.array([1, 2], np.float32)
    plain, scaled = run(
        instance, make_request(x=x), make_request(x=x, scale=np.array([3], np.float32))
    )
    np.testing.assert_allclose(outputs_of(plain)["OUTPUT__0"], [1, 2])
    np.testing.assert_allclose(outputs_of(scaled)["OUTPUT__0"], [3, 6])


def test_torchscript_required_argument_missing_from_config(tmp_path):
    model_dir = tmp_path / "add_mul"
    save_torchscript(model_dir, AddMul())
    config = load_config(
        model_dir,
        """
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    )
    with pytest.raises(ModelLoadError, match=r"needs argument 'y' .*name it 'y' or 'INPUT__1'"):
        make_instance(config, model_dir)


def test_torchscript_index_past_the_arguments(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    config = load_config(
        model_dir,
        """
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "INPUT__3" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        """,
    )
    with pytest.raises(ModelLoadError, match="'INPUT__3' maps to argument 3 but forward"):
        make_instance(config, model_dir)


def test_torchscript_dict_outputs_by_key(tmp_path):
    model_dir = tmp_path / "named"
    save_torchscript(model_dir, Named())
    config = load_config(
        model_dir,
        """
        max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "negated" data_type: TYPE_FP32 dims: [ 2 ] },
                 { name: "double" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    )
    instance = make_instance(config, model_dir)
    x = np.array([[1, 2]], np.float32)
    got = outputs_of(run(instance, make_request(x=x))[0])
    np.testing.assert_allclose(got["double"], [[2, 4]])
    np.testing.assert_allclose(got["negated"], [[-1, -2]])


MIXED = """
max_batch_size: 4
input [ { name: "a" data_type: TYPE_FP16 dims: [ 3 ] },
        { name: "b" data_type: TYPE_INT64 dims: [ 3 ] },
        { name: "c" data_type: TYPE_BOOL dims: [ 3 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP16 dims: [ 3 ] },
         { name: "OUTPUT__1" data_type: TYPE_INT64 dims: [ 3 ] },
         { name: "OUTPUT__2" data_type: TYPE_BOOL dims: [ 3 ] } ]
"""


def mixed_feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {
            "a": rng.random((n, 3)).astype(np.float16),
            "b": rng.integers(-(2**40), 2**40, (n, 3), dtype=np.int64),
            "c": rng.random((n, 3)) > 0.5,
        }
        for n in (1, 2)
    ]


def check_mixed(module, feeds, responses) -> None:
    for feed, response in zip(feeds, responses):
        got = outputs_of(response)
        want = module(*(torch.from_numpy(feed[name]) for name in ("a", "b", "c")))
        for index, expected in enumerate(want):
            np.testing.assert_array_equal(got[f"OUTPUT__{index}"], expected.numpy())
            assert got[f"OUTPUT__{index}"].dtype == expected.numpy().dtype
        assert [t.datatype for t in response.outputs] == ["FP16", "INT64", "BOOL"]


def test_torchscript_fp16_int64_bool(tmp_path):
    model_dir = tmp_path / "mixed"
    path = save_torchscript(model_dir, Mixed())
    instance = make_instance(load_config(model_dir, MIXED), model_dir)
    feeds = mixed_feeds()
    check_mixed(
        torch.jit.load(str(path)), feeds, run(instance, *(make_request(**f) for f in feeds))
    )


def test_requests_with_different_variable_dims_run_separately(tmp_path):
    model_dir = tmp_path / "rowsum"
    save_torchscript(model_dir, RowSum(), torch.ones(1, 3))
    config = load_config(
        model_dir,
        """
        max_batch_size: 8
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ -1 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
        """,
    )
    instance = make_instance(config, model_dir)
    spy = counting(instance)
    inputs = [np.ones((1, 3), np.float32), np.ones((2, 5), np.float32), np.ones((2, 3), np.float32)]
    responses = run(instance, *(make_request(INPUT__0=x) for x in inputs))
    assert spy.calls == 2
    for x, response in zip(inputs, responses):
        np.testing.assert_allclose(outputs_of(response)["OUTPUT__0"], x.sum(axis=1, keepdims=True))


def test_output_type_disagreeing_with_config_fails_the_request(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    config = load_config(
        model_dir,
        """
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_INT32 dims: [ 4 ] } ]
        """,
    )
    response = run(make_instance(config, model_dir), make_request(x=np.ones(4, np.float32)))[0]
    assert isinstance(response.error, ModelExecutionError)
    assert "torch.float32 but config.pbtxt declares TYPE_INT32" in str(response.error)


def test_a_raising_model_fails_only_its_batch(tmp_path):
    model_dir = tmp_path / "linear"
    save_torchscript(model_dir, Linear(), torch.ones(1, 4))
    config = load_config(
        model_dir,
        """
        max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        """,
    )
    instance = make_instance(config, model_dir)
    bad, good = run(
        instance,
        make_request(x=np.ones((1, 5), np.float32)),  # the layer takes 4 features
        make_request(x=np.ones((1, 4), np.float32)),
    )
    assert isinstance(bad.error, ModelExecutionError)
    assert "the PyTorch model raised" in str(bad.error)
    assert outputs_of(good)["OUTPUT__0"].shape == (1, 3)


def test_string_tensors_are_refused(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    config = load_config(
        model_dir,
        """
        input [ { name: "x" data_type: TYPE_STRING dims: [ 4 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        """,
    )
    with pytest.raises(ModelLoadError, match="TYPE_STRING, which torch tensors cannot hold"):
        make_instance(config, model_dir)


def test_a_pickle_is_not_loaded(tmp_path):
    model_dir = tmp_path / "pickled"
    (model_dir / "1").mkdir(parents=True)
    torch.save({"weights": torch.ones(2)}, str(model_dir / "1" / "model.pt"))
    config = load_config(
        model_dir,
        """
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    )
    with pytest.raises(ModelLoadError, match=r"cannot load model\.pt as TorchScript"):
        make_instance(config, model_dir)


# --------------------------------------------------------------------------------------------
# torch.export programs (model.pt2).


def export_add_mul(model_dir: Path, batch_max: int | None = None) -> Path:
    batch = torch.export.Dim("batch", max=batch_max) if batch_max else torch.export.Dim("batch")
    shapes = {"x": {0: batch}, "y": {0: batch}}
    return save_export(model_dir, AddMul(), (torch.ones(2, 3), torch.ones(2, 3)), shapes)


def test_export_fills_the_config_by_itself(tmp_path):
    model_dir = tmp_path / "add_mul"
    export_add_mul(model_dir)
    config = load_config(model_dir)
    assert config.default_model_filename == "model.pt2"
    assert config.platform == "torch_export"
    assert config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("x", mc.TYPE_FP32, [3]),
        ("y", mc.TYPE_FP32, [3]),
    ]
    assert [t.name for t in config.output] == ["OUTPUT__0", "OUTPUT__1"]


def test_export_batch_limit_caps_max_batch_size(tmp_path):
    model_dir = tmp_path / "add_mul"
    export_add_mul(model_dir, batch_max=3)
    assert load_config(model_dir).max_batch_size == 3
    with pytest.raises(ModelLoadError, match="above the largest batch 3"):
        load_config(model_dir, "max_batch_size: 8")


def test_export_runs_batched_and_matches_the_program(tmp_path):
    model_dir = tmp_path / "add_mul"
    path = export_add_mul(model_dir)
    instance = make_instance(load_config(model_dir), model_dir)
    spy = counting(instance)
    feeds = [
        {"x": np.random.rand(n, 3).astype(np.float32), "y": np.random.rand(n, 3).astype(np.float32)}
        for n in (1, 2)
    ]
    responses = run(instance, *(make_request(**f) for f in feeds))
    assert spy.calls == 1
    program = torch.export.load(str(path)).module()
    for feed, response in zip(feeds, responses):
        got = outputs_of(response)
        want = program(torch.from_numpy(feed["x"]), torch.from_numpy(feed["y"]))
        np.testing.assert_allclose(got["OUTPUT__0"], want[0].numpy())
        np.testing.assert_allclose(got["OUTPUT__1"], want[1].numpy())


def test_export_static_shapes_do_not_batch(tmp_path):
    model_dir = tmp_path / "affine"
    save_export(model_dir, Affine(), (torch.ones(2, 4),))
    config = load_config(model_dir)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [2, 4]
    response = run(make_instance(config, model_dir), make_request(x=np.zeros((2, 4), np.float32)))
    np.testing.assert_allclose(outputs_of(response[0])["OUTPUT__0"], np.ones((2, 4)))


def test_export_accepts_triton_index_names(tmp_path):
    model_dir = tmp_path / "add_mul"
    export_add_mul(model_dir)
    instance = make_instance(load_config(model_dir, ADD_MUL_INDEXED), model_dir)
    x, y = np.full((1, 3), 2, np.float32), np.full((1, 3), 5, np.float32)
    got = outputs_of(run(instance, make_request(INPUT__0=x, INPUT__1=y))[0])
    np.testing.assert_allclose(got["OUTPUT__0"], x + y)
    np.testing.assert_allclose(got["OUTPUT__1"], x * y)


def test_export_dict_outputs_are_named_by_key(tmp_path):
    model_dir = tmp_path / "named"
    save_export(model_dir, Named(), (torch.ones(2, 2),), {"x": {0: torch.export.Dim("b")}})
    config = load_config(model_dir)
    assert [t.name for t in config.output] == ["double", "negated"]
    got = outputs_of(
        run(make_instance(config, model_dir), make_request(x=np.ones((1, 2), np.float32)))[0]
    )
    np.testing.assert_allclose(got["negated"], [[-1, -1]])


def test_export_fp16_int64_bool(tmp_path):
    model_dir = tmp_path / "mixed"
    batch = torch.export.Dim("batch")
    example = (
        torch.ones(2, 3, dtype=torch.float16),
        torch.ones(2, 3, dtype=torch.int64),
        torch.ones(2, 3, dtype=torch.bool),
    )
    path = save_export(
        model_dir, Mixed(), example, {"a": {0: batch}, "b": {0: batch}, "c": {0: batch}}
    )
    config = load_config(model_dir)
    assert [t.data_type for t in config.input] == [mc.TYPE_FP16, mc.TYPE_INT64, mc.TYPE_BOOL]
    feeds = [{"a": f["a"], "b": f["b"], "c": f["c"]} for f in mixed_feeds()]
    responses = run(make_instance(config, model_dir), *(make_request(**f) for f in feeds))
    check_mixed(torch.export.load(str(path)).module(), feeds, responses)


def test_export_config_mismatch_is_named(tmp_path):
    model_dir = tmp_path / "add_mul"
    export_add_mul(model_dir)
    wrong = ADD_MUL_INDEXED.replace(
        'name: "INPUT__1" data_type: TYPE_FP32', 'name: "INPUT__1" data_type: TYPE_FP16'
    )
    with pytest.raises(
        ModelLoadError,
        match=r"input 'INPUT__1' is TYPE_FP16 dims \[3\] with max_batch_size 8 but model\.pt2 has "
        r"float32 \[-1, 3\]",
    ):
        load_config(model_dir, wrong, strict=True)


def test_export_strict_incomplete_config_suggests_one(tmp_path):
    model_dir = tmp_path / "add_mul"
    export_add_mul(model_dir)
    with pytest.raises(
        ModelLoadError,
        match=r'from model\.pt2, for example: max_batch_size: 4 input \[ \{ name: "x"',
    ):
        load_config(model_dir, "", strict=True)


# --------------------------------------------------------------------------------------------
# Parameters and devices.


def affine_config(extra: str = "") -> str:
    return f"""
    max_batch_size: 4
    input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
    output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
    {extra}
    """


def test_half_precision_keeps_the_config_types(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    config = load_config(
        model_dir,
        affine_config('parameters { key: "HALF_PRECISION" value: { string_value: "true" } }'),
    )
    instance = make_instance(config, model_dir)
    x = np.array([[0.5, 1.5, 2.5, 100.0]], np.float32)
    tensor = run(instance, make_request(INPUT__0=x))[0].outputs[0]
    assert tensor.datatype == "FP32" and tensor.data.dtype == np.float32
    np.testing.assert_allclose(tensor.data, x * 2 + 1)


def test_inference_mode_off_and_optimized_execution_off_still_run(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    config = load_config(
        model_dir,
        affine_config(
            'parameters { key: "INFERENCE_MODE" value: { string_value: "false" } }\n'
            'parameters { key: "DISABLE_OPTIMIZED_EXECUTION" value: { string_value: "true" } }'
        ),
    )
    instance = make_instance(config, model_dir)
    assert not instance._inference_mode and not instance._optimized
    got = outputs_of(run(instance, make_request(INPUT__0=np.zeros((1, 4), np.float32)))[0])
    np.testing.assert_allclose(got["OUTPUT__0"], np.ones((1, 4)))


def test_torch_compile_on_an_exported_program(tmp_path):
    model_dir = tmp_path / "add_mul"
    export_add_mul(model_dir)
    config = load_config(
        model_dir,
        'parameters { key: "TORCH_COMPILE" value: { string_value: "true" } }\n'
        'parameters { key: "TORCH_COMPILE_BACKEND" value: { string_value: "eager" } }',
    )
    instance = make_instance(config, model_dir)
    x = np.ones((2, 3), np.float32)
    got = outputs_of(run(instance, make_request(x=x, y=x))[0])
    np.testing.assert_allclose(got["OUTPUT__0"], x + x)


def test_torch_compile_refuses_torchscript(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    config = load_config(
        model_dir, affine_config('parameters { key: "TORCH_COMPILE" value: { string_value: "1" } }')
    )
    with pytest.raises(ModelLoadError, match=r"TORCH_COMPILE needs a torch\.export program"):
        make_instance(config, model_dir)


def test_bad_boolean_parameter(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    config = load_config(
        model_dir,
        affine_config('parameters { key: "HALF_PRECISION" value: { string_value: "half" } }'),
    )
    with pytest.raises(ModelLoadError, match="'HALF_PRECISION' must be true or false"):
        make_instance(config, model_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_gpu_instance_without_cuda_says_so(tmp_path):
    model_dir = tmp_path / "affine"
    save_torchscript(model_dir, Affine(), torch.ones(1, 4))
    with pytest.raises(ModelLoadError, match="KIND_GPU but this torch build cannot use a GPU"):
        make_instance(load_config(model_dir, affine_config()), model_dir, kind="GPU")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_gpu_instance_runs_on_its_device(tmp_path, kind):
    model_dir = tmp_path / "add_mul"
    if kind == "torchscript":
        save_torchscript(model_dir, AddMul(), torch.ones(2, 3), torch.ones(2, 3))
        config = load_config(model_dir, ADD_MUL_INDEXED)
        names = ("INPUT__0", "INPUT__1")
    else:
        export_add_mul(model_dir)
        config = load_config(model_dir)
        names = ("x", "y")
    device_id = torch.cuda.device_count() - 1
    instance = make_instance(config, model_dir, kind="GPU", device_id=device_id)
    assert instance._device == torch.device("cuda", device_id)
    x = np.random.rand(2, 3).astype(np.float32)
    got = outputs_of(run(instance, make_request(**{names[0]: x, names[1]: x}))[0])
    np.testing.assert_allclose(got["OUTPUT__0"], x + x, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Naming conventions on their own, and the example model.


def test_binding_conventions():
    assert bind_inputs(["y", "x"], ["x", "y"]).positions == {"y": 1, "x": 0}
    indexed = bind_inputs(["INPUT__1", "INPUT__0"], ["a", "b"])
    assert indexed.convention == NAMED_INDEX and indexed.positions == {"INPUT__1": 1, "INPUT__0": 0}
    assert bind_inputs(["p", "q"], ["a", "b"]).convention == CONFIG_ORDER
    assert bind_outputs(["k"], ["k", "j"]).convention == DICT_KEY
    with pytest.raises(ModelLoadError, match="both map to position 0"):
        bind_outputs(["A__0", "B__0"], None)


def test_simple_torchscript_example_loads_and_computes_2x_plus_1():
    model_dir = REPO_ROOT / "model_repository" / "simple_torchscript"
    config = load_config(model_dir, (model_dir / "config.pbtxt").read_text())
    instance = make_instance(config, model_dir)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = outputs_of(run(instance, make_request(INPUT__0=x))[0])
    np.testing.assert_allclose(got["OUTPUT__0"], x * 2 + 1)


def test_export_batch_bound_above_the_default_sets_max_batch_size(tmp_path):
    model_dir = tmp_path / "add_mul"
    export_add_mul(model_dir, batch_max=64)
    assert load_config(model_dir).max_batch_size == 64  # the declared bound, not Triton's 4
