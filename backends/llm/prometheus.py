"""The LLM engines' metrics in Prometheus' text format, under vLLM's names.

vLLM's names (`vllm:time_to_first_token_seconds`, ...) are the ones Triton's vLLM backend also
exports, so dashboards and alerts written for either work unchanged. Series carry the same
`model` and `version` labels as Trident's `nv_*` metrics. Rendered at scrape time from each
engine's snapshot; instances of one model version are added together. The text is written by
the server's one Prometheus renderer (runtime/observability/exposition.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from trident.runtime.observability.exposition import Labels, MetricFamily, MetricType
from trident.runtime.observability.exposition import render as render_families

from .engine import EngineMetricsSnapshot, EngineStats, HistogramSnapshot

#: (name, HELP) of the counters read from EngineMetricsSnapshot attributes.
_COUNTERS = (
    ("prompt_tokens_total", "vllm:prompt_tokens_total", "Number of prefill tokens processed."),
    (
        "generation_tokens_total",
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
    ),
    (
        "preemptions_total",
        "vllm:num_preemptions_total",
        "Cumulative number of preemptions (requests recomputed when the KV cache ran out).",
    ),
    (
        "prefix_cache_queries_total",
        "vllm:prefix_cache_queries_total",
        "Prompt tokens looked up in the prefix cache.",
    ),
    (
        "prefix_cache_hits_total",
        "vllm:prefix_cache_hits_total",
        "Prompt tokens found in the prefix cache.",
    ),
)
_HISTOGRAMS = (
    (
        "time_to_first_token_seconds",
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
    ),
    (
        "inter_token_latency_seconds",
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
    ),
    (
        "e2e_request_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "Histogram of end to end request latency in seconds.",
    ),
    (
        "request_queue_time_seconds",
        "vllm:request_queue_time_seconds",
        "Histogram of time spent waiting for the first engine step, in seconds.",
    ),
    (
        "request_prompt_tokens",
        "vllm:request_prompt_tokens",
        "Number of prefill tokens processed per request.",
    ),
    (
        "request_generation_tokens",
        "vllm:request_generation_tokens",
        "Number of generation tokens processed per request.",
    ),
    (
        "iteration_tokens_total",
        "vllm:iteration_tokens_total",
        "Histogram of the number of tokens per engine step.",
    ),
)
FINISH_REASONS = ("stop", "length", "abort")


@dataclass
class ModelSample:
    """One model version's engines, added together."""

    model: str
    version: int
    snapshots: list[EngineMetricsSnapshot] = field(default_factory=list)
    stats: list[EngineStats] = field(default_factory=list)

    @property
    def labels(self) -> Labels:
        return Labels((("model", self.model), ("version", str(self.version))))


def render(samples: Iterable[ModelSample]) -> str:
    """Every LLM metric family, each with HELP and TYPE once, one series per model version."""
    models = [(sample, sample.labels) for sample in samples if sample.snapshots]
    if not models:
        return ""
    families: list[MetricFamily] = []
    for attribute, name, help_text in _COUNTERS:
        family = MetricFamily(name, help_text, MetricType.COUNTER)
        for sample, labels in models:
            family.add(sum(getattr(snapshot, attribute) for snapshot in sample.snapshots), labels)
        families.append(family)
    family = MetricFamily(
        "vllm:request_success_total",
        "Count of successfully processed requests, by finish reason.",
        MetricType.COUNTER,
    )
    for sample, labels in models:
        for reason in FINISH_REASONS:
            total = sum(s.request_success_total.get(reason, 0) for s in sample.snapshots)
            family.add(total, labels.extended(("finished_reason", reason)))
    families.append(family)
    gauges = (
        ("vllm:num_requests_running", "Number of requests running in the engine.", _running),
        ("vllm:num_requests_waiting", "Number of requests waiting for admission.", _waiting),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", _kv_usage),
    )
    for name, help_text, value in gauges:
        family = MetricFamily(name, help_text, MetricType.GAUGE)
        for sample, labels in models:
            family.add(value(sample), labels)
        families.append(family)
    for attribute, name, help_text in _HISTOGRAMS:
        family = MetricFamily(name, help_text, MetricType.HISTOGRAM)
        for sample, labels in models:
            merged = _merge([getattr(snapshot, attribute) for snapshot in sample.snapshots])
            family.add_histogram(
                labels,
                merged.bounds,
                merged.cumulative_counts[:-1],  # the last is +Inf's: the count
                merged.sum,
                merged.count,
            )
        families.append(family)
    return render_families(families)


def _running(sample: ModelSample) -> int:
    return sum(stats.num_running for stats in sample.stats)


def _waiting(sample: ModelSample) -> int:
    return sum(stats.num_waiting for stats in sample.stats)


def _kv_usage(sample: ModelSample) -> float:
    total = sum(stats.kv_blocks_total for stats in sample.stats)
    used = sum(stats.kv_blocks_used for stats in sample.stats)
    return used / total if total else 0.0


def _merge(histograms: list[HistogramSnapshot]) -> HistogramSnapshot:
    first = histograms[0]
    counts = [sum(h.cumulative_counts[i] for h in histograms) for i in range(len(first.bounds) + 1)]
    return HistogramSnapshot(
        first.bounds,
        tuple(counts),
        sum(h.sum for h in histograms),
        sum(h.count for h in histograms),
    )
