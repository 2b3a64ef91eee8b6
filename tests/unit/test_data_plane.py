"""The core's three services answer plain values, and each frontend renders them: gRPC as
Triton's messages, HTTP as the JSON Trident has always sent (protobuf's JSON printing of those
messages, byte for byte, plus Trident's batch close reasons). No sockets here."""

from __future__ import annotations

import asyncio
import random
from enum import StrEnum
from types import SimpleNamespace

import pytest

from trident.runtime.core.data_plane import DataPlane, ModelControl
from trident.runtime.core.model_config import message_to_dict
from trident.runtime.core.model_queries import ModelMetadata, ModelQueries, TensorMetadata
from trident.runtime.core.shared_memory import SharedMemoryRegistry
from trident.runtime.core.stats import ModelStatistics, ModelStats
from trident.runtime.errors import UnavailableError
from trident.runtime.frontends.grpc import render as grpc_render
from trident.runtime.frontends.http import render as http_render
from trident.runtime.frontends.http.codec import dumps
from trident.runtime.observability.trace_settings import TraceSettings
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest


def _random_stats(rng: random.Random) -> ModelStats:
    """Counters where any field may be zero or not (zeros change protobuf's JSON key order)."""
    stats = ModelStats()
    for _ in range(rng.randrange(3)):
        ends = sorted(rng.randrange(4) for _ in range(3))
        stats.record_execution(rng.randrange(1, 5), 0, *ends)
    for _ in range(rng.randrange(3)):
        ends = sorted(rng.randrange(3) for _ in range(4))
        stats.record_success(0, ends[0], 0, *ends[1:])
    if rng.random() < 0.3:
        stats.record_failure("BACKEND", 0, rng.randrange(3))
    if rng.random() < 0.3:
        stats.record_cache_miss(rng.randrange(3))
    if rng.random() < 0.3:
        stats.record_batch_closed(rng.choice(("full", "delay")))
    if rng.random() < 0.5:
        stats.last_inference_ms = 0
    return stats


def _snapshots(seed: int) -> list[ModelStatistics]:
    rng = random.Random(seed)
    return [
        _random_stats(rng).snapshot(f"m{index}", rng.randrange(1, 3))
        for index in range(rng.randrange(3))
    ]


def test_http_statistics_are_the_json_of_the_grpc_message_plus_close_reasons():
    for seed in range(300):
        snapshots = _snapshots(seed)
        expected = message_to_dict(grpc_render.model_statistics(snapshots))
        for entry, snapshot in zip(expected["model_stats"], snapshots, strict=True):
            entry["batch_close_reasons"] = dict(snapshot.batch_close_reasons)
        rendered = http_render.model_statistics(snapshots)
        assert dumps(rendered) == dumps(expected), f"seed {seed}"


def test_grpc_statistics_carry_every_duration_even_at_zero():
    stats = ModelStats()
    stats.record_execution(2, 0, 0, 0, 0)
    message = grpc_render.model_statistics([stats.snapshot("m", 3)]).model_stats[0]
    assert (message.name, message.version, message.inference_count) == ("m", "3", 2)
    for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert message.inference_stats.HasField(field)
    assert message.inference_stats.HasField("cache_hit")
    assert message.inference_stats.HasField("cache_miss")
    batch = message.batch_stats[0]
    assert batch.batch_size == 2
    assert all(batch.HasField(f) for f in ("compute_input", "compute_infer", "compute_output"))


class _Reason(StrEnum):
    FULL = "full"


def test_statistics_snapshot_is_frozen_and_sorted_and_names_close_reasons_by_value():
    stats = ModelStats()
    for size in (4, 1, 2):
        stats.record_execution(size, 0, 1, 2, 3)
    stats.record_batch_closed(_Reason.FULL)  # type: ignore[arg-type]
    snapshot = stats.snapshot("m", 1)
    stats.record_execution(8, 0, 1, 2, 3)
    stats.record_batch_closed("delay")
    assert [batch.batch_size for batch in snapshot.batches] == [1, 2, 4]
    assert snapshot.inference_count == 7
    assert dict(snapshot.batch_close_reasons) == {"full": 1}
    assert type(next(iter(snapshot.batch_close_reasons))) is str
    document = http_render.model_statistics([snapshot])["model_stats"][0]
    assert document["batch_close_reasons"] == {"full": 1}


def _config(max_batch_size: int) -> mc.ModelConfig:
    config = mc.ModelConfig(name="m", backend="python", max_batch_size=max_batch_size)
    config.input.add(name="IN", data_type=mc.TYPE_FP32, dims=[3])
    config.output.add(name="OUT", data_type=mc.TYPE_STRING, dims=[-1, 2])
    return config


class _FakeModels:
    """The few ModelManager calls the queries make, over fixed models."""

    def __init__(self, *models: SimpleNamespace) -> None:
        self.models = {(model.name, model.version): model for model in models}
        self.ready = True

    def get(self, name: str, version: int = 0) -> SimpleNamespace:
        if version:
            return self.models[(name, version)]
        return max((m for m in self.models.values() if m.name == name), key=lambda m: m.version)

    def ready_versions(self, name: str) -> list[int]:
        return sorted(v for n, v in self.models if n == name)

    def loaded_versions(self) -> list[SimpleNamespace]:
        return list(self.models.values())

    def loaded_versions_of(self, name: str, version: int = 0) -> list[SimpleNamespace]:
        return [m for m in self.models.values() if m.name == name and version in (0, m.version)]

    def all_ready(self) -> bool:
        return self.ready

    def is_ready(self, name: str, version: int = 0) -> bool:
        return any(n == name and version in (0, v) for n, v in self.models)


def _model(name: str, version: int, max_batch_size: int = 0) -> SimpleNamespace:
    stats = ModelStats()
    stats.record_execution(version, 0, 1, 2, 3)
    config = _config(max_batch_size)
    return SimpleNamespace(name=name, version=version, config=config, stats=stats, decoupled=False)


def _queries(models: _FakeModels, strict: bool = True) -> ModelQueries:
    no_gpu = SimpleNamespace(available=lambda: False)
    return ModelQueries(models, no_gpu, strict)  # type: ignore[arg-type]


def test_model_metadata_is_plain_and_leads_batched_shapes_with_minus_one():
    queries = _queries(_FakeModels(_model("m", 1, 8), _model("m", 2, 8)))
    assert queries.model_metadata("m") == ModelMetadata(
        name="m",
        versions=("1", "2"),
        platform="python",
        inputs=(TensorMetadata("IN", "FP32", (-1, 3)),),
        outputs=(TensorMetadata("OUT", "BYTES", (-1, -1, 2)),),
    )
    assert queries.model_metadata("m", "1").versions == ("1",)
    unbatched = _queries(_FakeModels(_model("u", 1))).model_metadata("u")
    assert unbatched.inputs[0].shape == (3,)


def test_metadata_renders_as_triton_shows_it_on_both_protocols():
    metadata = _queries(_FakeModels(_model("m", 1, 8))).model_metadata("m")
    message = grpc_render.model_metadata(metadata)
    assert [(t.name, t.datatype, list(t.shape)) for t in message.inputs] == [
        ("IN", "FP32", [-1, 3])
    ]
    assert dumps(http_render.model_metadata(metadata)) == dumps(message_to_dict(message))
    assert dumps(http_render.model_metadata(metadata)) == (
        b'{"name":"m","versions":["1"],"platform":"python",'
        b'"inputs":[{"name":"IN","datatype":"FP32","shape":[-1,3]}],'
        b'"outputs":[{"name":"OUT","datatype":"BYTES","shape":[-1,-1,2]}]}'
    )


def test_statistics_of_one_model_one_version_or_all():
    queries = _queries(_FakeModels(_model("a", 1), _model("a", 2), _model("b", 1)))
    everything = queries.model_statistics()
    assert [(s.name, s.version) for s in everything] == [("a", 1), ("a", 2), ("b", 1)]
    assert [(s.name, s.version) for s in queries.model_statistics("a")] == [("a", 1), ("a", 2)]
    (one,) = queries.model_statistics("a", "2")
    assert (one.version, one.inference_count, one.execution_count) == (2, 2, 1)


def test_readiness_follows_the_models_unless_relaxed_and_ends_at_shutdown():
    models = _FakeModels(_model("a", 1))
    strict, relaxed = _queries(models), _queries(models, strict=False)
    models.ready = False
    assert (strict.ready(), relaxed.ready(), strict.live()) == (False, True, True)
    models.ready = True
    assert strict.ready()
    relaxed.begin_shutdown()
    assert not relaxed.ready()
    assert strict.model_ready("a") and not strict.model_ready("nope")


def test_the_data_plane_refuses_inference_once_shutting_down():
    plane = DataPlane.build(
        _FakeModels(),  # type: ignore[arg-type]
        SharedMemoryRegistry(),
        SimpleNamespace(available=lambda: False),  # type: ignore[arg-type]
        TraceSettings(),
        None,  # type: ignore[arg-type]
    )
    plane.begin_shutdown()
    assert not plane.queries.ready()
    with pytest.raises(UnavailableError, match="shutting down"):
        asyncio.run(plane.inference.infer(InferenceRequest("a")))


def test_model_control_is_administration_for_load_and_unload_and_a_query_for_readiness():
    calls: list[tuple[object, ...]] = []

    class Admin:
        async def load_model(self, name, config_json="", files=None):
            calls.append(("load", name, config_json, files))

        async def unload_model(self, name, unload_dependents=False):
            calls.append(("unload", name, unload_dependents))

    control = ModelControl(Admin(), _queries(_FakeModels(_model("a", 1))))  # type: ignore[arg-type]
    asyncio.run(control.load_model("a", "{}", {"1/model.py": b""}))
    asyncio.run(control.unload_model("a", True))
    assert calls == [("load", "a", "{}", {"1/model.py": b""}), ("unload", "a", True)]
    assert control.model_ready("a") and not control.model_ready("b")
