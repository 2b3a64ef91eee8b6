from dataclasses import dataclass

from trident.runtime.core.stats import ModelStats
from trident.runtime.frontends.grpc import render
from trident.runtime.observability.metrics import render_metrics


@dataclass
class _Model:
    name: str
    version: int
    stats: ModelStats


def test_render_uses_triton_names_labels_and_counts():
    stats = ModelStats()
    stats.record_execution(2, 0, 1_000, 3_000, 4_000)
    stats.record_success(0, 500, 1_000, 2_000, 3_000, 10_000)
    stats.record_success(0, 500, 1_000, 2_000, 3_000, 10_000)
    stats.record_failure("BACKEND", 0, 1_000)
    text = render_metrics([_Model("simple", 3, stats)])
    lines = set(text.splitlines())
    assert "# TYPE nv_inference_request_success counter" in lines
    assert 'nv_inference_request_success{model="simple",version="3"} 2' in lines
    assert 'nv_inference_request_failure{model="simple",reason="BACKEND",version="3"} 1' in lines
    assert 'nv_inference_request_failure{model="simple",reason="REJECTED",version="3"} 0' in lines
    assert 'nv_inference_count{model="simple",version="3"} 2' in lines
    assert 'nv_inference_exec_count{model="simple",version="3"} 1' in lines
    assert 'nv_inference_request_duration_us{model="simple",version="3"} 20' in lines
    assert 'nv_inference_queue_duration_us{model="simple",version="3"} 1' in lines
    assert "# TYPE nv_inference_pending_request_count gauge" in lines


def test_statistics_proto_matches_counters():
    stats = ModelStats()
    stats.record_execution(4, 0, 10, 20, 30)
    stats.record_success(0, 5, 0, 10, 20, 30)
    proto = render.model_statistics([stats.snapshot("m", 1)]).model_stats[0]
    assert proto.version == "1"
    assert proto.inference_count == 4
    assert proto.execution_count == 1
    assert proto.inference_stats.success.count == 1
    assert proto.inference_stats.success.ns == 30
    assert [b.batch_size for b in proto.batch_stats] == [4]
    assert proto.batch_stats[0].compute_infer.ns == 10
