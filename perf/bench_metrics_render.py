"""How long a /metrics scrape spends rendering: the server's nv_* families for 50 loaded model
versions (some batching dynamically, some cached) plus 50 series of a Python model's custom
metrics, against the statistics extension's answer for the same 50 models (the other view of
the same counters, built as the gRPC message), in the same run.

    .venv/bin/python perf/bench_metrics_render.py [--models 50] [--repeat 200]

Prints the best time of each and their ratio. Results are in perf/README.md.
"""

from __future__ import annotations

import argparse
import timeit
from dataclasses import dataclass
from typing import Any

from trident.backends.python.metrics import CUSTOM_METRICS, MetricFamily
from trident.runtime.core.stats import ModelStats
from trident.runtime.frontends.grpc import render
from trident.runtime.observability.metrics import render_metrics


@dataclass
class _Model:
    name: str
    version: int
    stats: ModelStats
    response_cache: Any = None


def _models(count: int) -> list[_Model]:
    models = []
    for index in range(count):
        stats = ModelStats()
        for batch in range(1, 5):
            stats.record_execution(batch, 0, 1_000, 3_000, 4_000 + index)
            stats.record_success(0, 500, 1_000, 2_000, 3_000, 10_000 + index)
        stats.record_failure("BACKEND", 0, 1_000)
        if index % 3 == 0:
            stats.record_batch_closed("full")
            stats.record_batch_closed("delay")
        cache = object() if index % 5 == 0 else None
        models.append(_Model(f"model_{index}", 1 + index % 2, stats, cache))
    return models


def _custom_metrics(count: int) -> None:
    latency = MetricFamily("bench_latency_ms", "Latency of a step, in ms", MetricFamily.HISTOGRAM)
    requests = MetricFamily("bench_requests", "Requests seen", MetricFamily.COUNTER)
    for index in range(count):
        labels = {"model": f"model_{index}", "step": "pre\\process"}
        latency.Metric(labels=labels, buckets=[0.5, 1, 2.5, 10]).observe(index % 7)
        requests.Metric(labels=labels).increment(index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    models = _models(args.models)
    _custom_metrics(args.models)

    def scrape() -> str:
        return render_metrics(models) + CUSTOM_METRICS.render()

    def statistics() -> bytes:
        snapshots = (m.stats.snapshot(m.name, m.version) for m in models)
        return render.model_statistics(snapshots).SerializeToString()

    text = scrape()
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    render_s = min(timeit.repeat(scrape, number=1, repeat=args.repeat))
    stats_s = min(timeit.repeat(statistics, number=1, repeat=args.repeat))
    print(f"models: {args.models}, series rendered: {series}, bytes: {len(text)}")
    print(f"/metrics render: {render_s * 1e3:.3f} ms ({render_s / series * 1e6:.2f} us a series)")
    print(f"statistics (gRPC message, same models): {stats_s * 1e3:.3f} ms")
    print(f"ratio render / statistics: {render_s / stats_s:.2f}")


if __name__ == "__main__":
    main()
