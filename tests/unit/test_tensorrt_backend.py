"""The TensorRT backend (backends/tensorrt). Without a GPU these tests cover what decides whether
and why a model loads: the missing-package and no-GPU errors, the plan-version message, engine
caching and optimization-profile parsing, and auto-complete from an engine's tensors (with a
stand-in engine). The GPU test builds a real engine where TensorRT and CUDA exist."""

from __future__ import annotations

import enum
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from trident.backends.base import ComputeTiming, InstanceContext
from trident.backends.model_signature import complete_config
from trident.backends.tensorrt import backend as trt_backend
from trident.backends.tensorrt.builder import (
    builds_from_onnx,
    engine_cache_path,
    engine_path,
    parse_profile_shapes,
)
from trident.backends.tensorrt.plan import (
    deserialize_failure,
    deserialize_plan,
    engine_signature,
    instance_profiles,
    plan_version,
    version_tuple,
    versions_differ,
)
from trident.runtime.core import model_config
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest, Tensor

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# --------------------------------------------------------------------------------------------
# A stand-in for the `tensorrt` module: just what the code under test touches.


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class FakeILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT64 = 2
    FP8 = 3


class FakeRuntime:
    """Refuses every plan the way TensorRT does for one built by another version."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes):
        self.logger.log(
            Severity.ERROR,
            "Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed. "
            "Version tag does not match.",
        )
        return None


def fake_tensorrt(version: str = "10.3.0") -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    module.ILogger = FakeILogger
    module.Runtime = FakeRuntime
    module.TensorIOMode = TensorIOMode
    module.DataType = DataType
    return module


class FakeEngine:
    """An engine with x: FLOAT [-1, 4] (profile max batch 16) -> y: HALF [-1, 4], z: INT64 [2]."""

    tensors = {
        "x": (TensorIOMode.INPUT, DataType.FLOAT, (-1, 4)),
        "y": (TensorIOMode.OUTPUT, DataType.HALF, (-1, 4)),
        "z": (TensorIOMode.OUTPUT, DataType.INT64, (-1, 2)),
    }
    num_optimization_profiles = 2

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, index: int) -> str:
        return list(self.tensors)[index]

    def get_tensor_mode(self, name: str):
        return self.tensors[name][0]

    def get_tensor_dtype(self, name: str):
        return self.tensors[name][1]

    def get_tensor_shape(self, name: str):
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name: str, profile: int):
        maximum = 16 if profile == 0 else 8
        return [(1, 4), (maximum, 4), (maximum, 4)]


def plan_bytes(major: int, minor: int, patch: int, build: int, magic: bytes = b"ptrt") -> bytes:
    header = bytearray(64)
    header[:4] = magic
    header[24:28] = bytes([major, minor, patch, build])
    return bytes(header)


def make_context(config: mc.ModelConfig, model_dir: Path, kind: str = "GPU") -> InstanceContext:
    return InstanceContext(
        config=config,
        model_name=config.name,
        model_version=1,
        model_dir=model_dir,
        version_dir=model_dir / "1",
        instance_name=f"{config.name}_0",
        kind=kind,
    )


COMPLETE = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP16 dims: [ 4 ] } ]
"""


def normalized(text: str = "", name: str = "engine") -> mc.ModelConfig:
    config = model_config.parse_config_text(text)
    model_config.normalize(config, name, "tensorrt")
    return config


def plan_model(tmp_path: Path, data: bytes = b"not really a plan") -> Path:
    model_dir = tmp_path / "engine"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.plan").write_bytes(data)
    return model_dir


# --------------------------------------------------------------------------------------------
# Missing package, missing GPU.


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the error when tensorrt is not installed")
def test_without_tensorrt_the_model_fails_to_load_saying_so(tmp_path):
    model_dir = plan_model(tmp_path)
    backend = trt_backend.create_backend()
    with pytest.raises(
        ModelLoadError, match=r"needs NVIDIA's 'tensorrt' package.*: pip install tensorrt"
    ):
        backend.create_instance(make_context(normalized(COMPLETE), model_dir))
    with pytest.raises(ModelLoadError, match="'tensorrt' package"):
        backend.auto_complete_config(normalized(), model_dir, strict=False)


def test_complete_config_needs_no_tensorrt_to_auto_complete(tmp_path):
    model_dir = plan_model(tmp_path)
    config = normalized(COMPLETE)
    before = config.SerializeToString()
    trt_backend.create_backend().auto_complete_config(config, model_dir, strict=False)
    assert config.SerializeToString() == before


@pytest.mark.skipif(has_cuda(), reason="checks the error on a machine without a GPU")
def test_without_a_gpu_the_model_fails_to_load_saying_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    model_dir = plan_model(tmp_path)
    with pytest.raises(ModelLoadError, match="TensorRT needs an NVIDIA GPU"):
        trt_backend.create_backend().create_instance(make_context(normalized(COMPLETE), model_dir))


def test_string_tensors_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(trt_backend, "import_tensorrt", fake_tensorrt)
    monkeypatch.setattr(trt_backend, "cuda_device", lambda device_id, who: (None, "cuda:0"))
    config = normalized(COMPLETE.replace("TYPE_FP32", "TYPE_STRING"))
    with pytest.raises(ModelLoadError, match="TYPE_STRING, which TensorRT cannot hold"):
        trt_backend.create_backend().create_instance(make_context(config, plan_model(tmp_path)))


# --------------------------------------------------------------------------------------------
# Plans built by another TensorRT version.


def test_plan_version_is_read_from_the_header():
    assert plan_version(plan_bytes(8, 6, 1, 6)) == (8, 6, 1, 6)
    assert plan_version(plan_bytes(10, 3, 0, 26, magic=b"ftrt")) == (10, 3, 0, 26)
    assert plan_version(plan_bytes(8, 6, 1, 6, magic=b"abcd")) is None
    assert plan_version(plan_bytes(2, 0, 0, 0)) is None  # not a plausible TensorRT version
    assert plan_version(b"ptrt") is None


def test_version_comparison():
    assert version_tuple("10.3.0.post1") == (10, 3, 0)
    assert version_tuple("10.0.0b6") == (10, 0, 0)
    assert versions_differ((8, 6, 1, 6), "10.3.0")
    assert not versions_differ((10, 3, 0, 26), "10.3.0.post1")


def test_mismatch_message_names_both_versions_and_the_fix():
    error = deserialize_failure(
        "model.plan", plan_bytes(8, 6, 1, 6), "10.3.0", ["Version tag does not match."]
    )
    message = str(error)
    assert (
        "model.plan was built by TensorRT 8.6.1.6 but this server runs TensorRT 10.3.0" in message
    )
    assert "rebuild model.plan with TensorRT 10.3.0" in message
    assert "build_engine_from_onnx" in message
    assert "Version tag does not match." in message


def test_same_version_or_unknown_header_gets_the_general_message():
    same = str(deserialize_failure("model.plan", plan_bytes(10, 3, 0, 1), "10.3.0", []))
    unknown = str(deserialize_failure("model.plan", b"junk", "10.3.0", ["bad magic"]))
    for message in (same, unknown):
        assert message.startswith("TensorRT 10.3.0 could not deserialize model.plan")
        assert "built by" not in message
    assert "bad magic" in unknown


def test_deserialize_plan_reports_what_tensorrt_logged():
    with pytest.raises(ModelLoadError) as info:
        deserialize_plan(fake_tensorrt("10.3.0"), plan_bytes(8, 6, 1, 6), "model.plan")
    message = str(info.value)
    assert "TensorRT 8.6.1.6" in message and "TensorRT 10.3.0" in message
    assert "Version tag does not match" in message


def test_an_instance_reports_the_version_mismatch(tmp_path, monkeypatch):
    class FakeCuda:
        @staticmethod
        def device(device):
            import contextlib

            return contextlib.nullcontext()

    fake_torch = types.SimpleNamespace(cuda=FakeCuda)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake_tensorrt("10.3.0"))
    monkeypatch.setattr(trt_backend, "cuda_device", lambda device_id, who: (fake_torch, "cuda:0"))
    monkeypatch.setattr(trt_backend, "gpu_description", lambda torch, device: "Fake GPU sm_90")
    model_dir = plan_model(tmp_path, plan_bytes(8, 6, 1, 6))
    with pytest.raises(ModelLoadError, match=r"built by TensorRT 8\.6\.1\.6 but this server runs"):
        trt_backend.create_backend().create_instance(make_context(normalized(COMPLETE), model_dir))


# --------------------------------------------------------------------------------------------
# Engine signature, auto-complete, profiles.


def test_engine_signature_and_auto_complete():
    signature = engine_signature(fake_tensorrt(), FakeEngine(), "model.plan", [0, 1])
    assert [(t.name, t.data_type, t.shape) for t in signature.inputs] == [
        ("x", mc.TYPE_FP32, (-1, 4))
    ]
    assert [(t.name, t.data_type) for t in signature.outputs] == [
        ("y", mc.TYPE_FP16),
        ("z", mc.TYPE_INT64),
    ]
    assert signature.batch_limit == 8  # the smaller of the two profiles' maxima
    config = normalized()
    complete_config(config, signature, default_max_batch_size=32)
    assert config.max_batch_size == 8
    assert [list(t.dims) for t in config.output] == [[4], [2]]


def test_backend_auto_complete_reads_the_engine(tmp_path, monkeypatch):
    class FakeCuda:
        @staticmethod
        def device(device):
            import contextlib

            return contextlib.nullcontext()

    fake_torch = types.SimpleNamespace(cuda=FakeCuda)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake_tensorrt())
    monkeypatch.setattr(trt_backend, "cuda_device", lambda device_id, who: (fake_torch, "cuda:0"))
    monkeypatch.setattr(trt_backend, "gpu_description", lambda torch, device: "Fake GPU sm_90")
    monkeypatch.setattr(
        trt_backend, "deserialize_plan", lambda trt, data, source: (None, FakeEngine())
    )
    model_dir = plan_model(tmp_path)
    config = normalized()
    trt_backend.create_backend().auto_complete_config(config, model_dir, strict=False)
    assert config.max_batch_size == 16  # the profile's maximum, not the default 4
    assert config.HasField("dynamic_batching")
    assert [t.name for t in config.input] == ["x"]
    strict = normalized(COMPLETE.replace("TYPE_FP16", "TYPE_FP32"))
    with pytest.raises(
        ModelLoadError, match=r"output 'y' is TYPE_FP32 .* model\.plan has trt\.HALF"
    ):
        trt_backend.create_backend().auto_complete_config(strict, model_dir, strict=True)


def test_unsupported_engine_types_cannot_be_auto_completed():
    class Fp8Engine(FakeEngine):
        tensors = {"q": (TensorIOMode.INPUT, DataType.FP8, (4,)), **FakeEngine.tensors}

    signature = engine_signature(fake_tensorrt(), Fp8Engine(), "model.plan", [0])
    with pytest.raises(
        ModelLoadError, match=r"cannot derive a config data type for 'q' .*trt\.FP8"
    ):
        complete_config(normalized(), signature)


def test_instance_profiles_from_the_instance_group():
    config = normalized(
        'instance_group [ { name: "fast" profile: [ "1" ] }, '
        '{ name: "fast_big" profile: [ "0", "2" ] } ]'
    )
    assert instance_profiles(config, "fast_0") == [1]
    assert instance_profiles(config, "fast_big_3") == [0, 2]  # the longest matching group name
    assert instance_profiles(config) == [0, 1, 2]
    assert instance_profiles(normalized(), "engine_0") == [0]
    bad = normalized('instance_group [ { name: "g" profile: [ "first" ] } ]')
    with pytest.raises(ModelLoadError, match="profile 'first' is not a profile index"):
        instance_profiles(bad, "g_0")


# --------------------------------------------------------------------------------------------
# Building from ONNX and the engine cache.


def test_profile_shapes_parse():
    assert parse_profile_shapes("k", "x:1x3x224x224, y:1x16") == {
        "x": (1, 3, 224, 224),
        "y": (1, 16),
    }
    assert parse_profile_shapes("k", "") == {}
    with pytest.raises(ModelLoadError, match="'x:1xa' is not NAME:D1xD2"):
        parse_profile_shapes("trt_profile_min_shapes", "x:1xa")


def onnx_config(tmp_path: Path, extra: str = "") -> mc.ModelConfig:
    return normalized(
        f"""
        parameters {{ key: "build_engine_from_onnx" value: {{ string_value: "true" }} }}
        parameters {{ key: "engine_cache_dir" value: {{ string_value: "{tmp_path / "cache"}" }} }}
        {extra}
        """
    )


def test_engine_cache_key_follows_model_version_gpu_and_options(tmp_path):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    config = onnx_config(tmp_path)
    assert builds_from_onnx(config)
    first = engine_cache_path(config, onnx_path, "10.3.0", "H100 sm_90")
    assert first.parent == tmp_path / "cache"
    assert first == engine_cache_path(config, onnx_path, "10.3.0", "H100 sm_90")
    assert first != engine_cache_path(config, onnx_path, "10.4.0", "H100 sm_90")
    assert first != engine_cache_path(config, onnx_path, "10.3.0", "L4 sm_89")
    fp16 = onnx_config(
        tmp_path, 'parameters { key: "precision_mode" value: { string_value: "FP16" } }'
    )
    assert first != engine_cache_path(fp16, onnx_path, "10.3.0", "H100 sm_90")
    onnx_path.write_bytes(b"other onnx bytes")
    assert first != engine_cache_path(config, onnx_path, "10.3.0", "H100 sm_90")


def test_a_cached_engine_is_reused_without_building(tmp_path):
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    (version_dir / "model.onnx").write_bytes(b"onnx bytes")
    config = onnx_config(tmp_path)
    trt = fake_tensorrt()  # has no Builder: building would fail
    cached = engine_cache_path(config, version_dir / "model.onnx", trt.__version__, "GPU")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"engine")
    assert engine_path(config, version_dir, trt, "GPU") == cached
    plain = normalized()
    assert engine_path(plain, version_dir, trt, "GPU") == version_dir / "model.plan"


def test_build_from_onnx_without_the_onnx_file(tmp_path):
    (tmp_path / "1").mkdir()
    with pytest.raises(
        ModelLoadError, match=r"build_engine_from_onnx is set but .* does not exist"
    ):
        engine_path(onnx_config(tmp_path), tmp_path / "1", fake_tensorrt(), "GPU")


def test_bad_precision_mode(tmp_path):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"x")
    config = onnx_config(
        tmp_path, 'parameters { key: "precision_mode" value: { string_value: "INT4" } }'
    )
    with pytest.raises(ModelLoadError, match="precision_mode"):
        engine_cache_path(config, onnx_path, "10.3.0", "GPU")


# --------------------------------------------------------------------------------------------
# On a GPU with TensorRT: build from ONNX, run, compare with ONNX Runtime.


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TENSORRT and has_cuda()), reason="needs tensorrt and a CUDA GPU")
def test_engine_built_from_onnx_matches_onnxruntime(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model_dir = tmp_path / "affine"
    (model_dir / "1").mkdir(parents=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("Mul", ["x", "two"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx_path = model_dir / "1" / "model.onnx"
    onnx.save(model, str(onnx_path))
    config = onnx_config(tmp_path)
    model_config.normalize(config, "affine", "tensorrt")
    backend = trt_backend.create_backend()
    backend.auto_complete_config(config, model_dir, strict=False)
    assert config.max_batch_size == 4
    instance = backend.create_instance(make_context(config, model_dir))
    requests = []
    for n in (1, 3):
        array = np.random.rand(n, 4).astype(np.float32)
        tensor = Tensor("x", "FP32", array.shape, array)
        request = InferenceRequest("affine", inputs=[tensor])
        request.inputs_by_name = {"x": tensor}
        requests.append(request)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for request, response in zip(requests, instance.execute(requests, ComputeTiming())):
        assert response.error is None, response.error
        expected = session.run(None, {"x": request.inputs[0].data})[0]
        np.testing.assert_allclose(response.outputs[0].data, expected, rtol=1e-5)
    instance.close()
