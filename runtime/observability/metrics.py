"""Prometheus metrics with Triton's family names, types, HELP texts and labels.

Rendered at scrape time from the same per-model counters the statistics extension reports
(runtime/core/stats.py), so the hot path pays nothing for metrics; the text itself is written by
exposition.py, the one renderer of every metric source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from trident.runtime.errors import FailureReason

from .exposition import Labels, MetricFamily, MetricType, render

#: `reason` label values of nv_inference_request_failure; every series exists from load on.
FAILURE_REASONS = tuple(FailureReason)


class _LoadedModel(Protocol):
    """What rendering reads of a loaded model version (runtime/core/model_manager.py)."""

    name: str
    version: int
    stats: Any


# (family, type, HELP text, value of ModelStats in the family's unit)
_COUNTERS: tuple[tuple[str, MetricType, str, object], ...] = (
    (
        "nv_inference_request_success",
        MetricType.COUNTER,
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_count",
        MetricType.COUNTER,
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        MetricType.COUNTER,
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_pending_request_count",
        MetricType.GAUGE,
        "Instantaneous number of pending requests awaiting execution per-model.",
        lambda s: s.pending,
    ),
    (
        "nv_inference_request_duration_us",
        MetricType.COUNTER,
        "Cumulative inference request duration in microseconds (includes cached requests)",
        lambda s: s.success.ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        MetricType.COUNTER,
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        MetricType.COUNTER,
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        MetricType.COUNTER,
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        MetricType.COUNTER,
        "Cumulative inference compute output duration in microseconds (does not include cached "
        "requests)",
        lambda s: s.compute_output.ns // 1000,
    ),
)


def _model_labels(model: _LoadedModel) -> Labels:
    return Labels((("model", model.name), ("version", str(model.version))))


def render_metrics(models: Iterable[_LoadedModel], response_cache: Any = None) -> str:
    """The text exposition format (version 0.0.4) of every family, for every loaded version;
    `response_cache` is the server's (runtime/core/response_cache.py), when configured."""
    models = list(models)
    labels = {id(model): _model_labels(model) for model in models}
    failures = MetricFamily(
        "nv_inference_request_failure",
        "Number of failed inference requests, all batch sizes",
        MetricType.COUNTER,
    )
    for model in models:
        for reason in FAILURE_REASONS:
            # Triton's label order: model, reason, version.
            failure_labels = Labels(
                (("model", model.name), ("reason", reason), ("version", str(model.version)))
            )
            failures.add(model.stats.failures_by_reason.get(reason, 0), failure_labels)
    families = [failures]
    for name, kind, help_text, value in _COUNTERS:
        family = MetricFamily(name, help_text, kind)
        for model in models:
            family.add(value(model.stats), labels[id(model)])  # type: ignore[operator]
        families.append(family)
    families.extend(_batch_close_metrics(models))
    families.extend(_cache_metrics(models, labels, response_cache))
    families.extend(_cpu_metrics())
    return render(families)


# (family, HELP text, value of ModelStats) for models whose config enables the response cache.
_MODEL_CACHE_COUNTERS: tuple[tuple[str, str, object], ...] = (
    ("nv_cache_num_hits_per_model", "Number of cache hits per model", lambda s: s.cache_hit.count),
    (
        "nv_cache_num_misses_per_model",
        "Number of cache misses per model",
        lambda s: s.cache_miss.count,
    ),
    (
        "nv_cache_hit_duration_per_model",
        "Total cache hit duration per model, in microseconds",
        lambda s: s.cache_hit.ns // 1000,
    ),
    (
        "nv_cache_miss_duration_per_model",
        "Total cache miss (insert+lookup) duration per model, in microseconds",
        lambda s: s.cache_miss.ns // 1000,
    ),
)

# (family, HELP text, value of the ResponseCache): the local cache's own gauges.
_CACHE_GAUGES: tuple[tuple[str, str, object], ...] = (
    (
        "nv_cache_num_entries",
        "Number of responses stored in response cache",
        lambda c: c.num_entries,
    ),
    ("nv_cache_num_lookups", "Number of cache lookups in response cache", lambda c: c.lookups),
    ("nv_cache_num_hits", "Number of cache hits in response cache", lambda c: c.hits),
    ("nv_cache_num_misses", "Number of cache misses in response cache", lambda c: c.misses),
    (
        "nv_cache_num_evictions",
        "Number of cache evictions in response cache",
        lambda c: c.evictions,
    ),
    (
        "nv_cache_lookup_duration",
        "Total cache lookup duration (hit and miss), in microseconds",
        lambda c: c.lookup_ns // 1000,
    ),
    (
        "nv_cache_insertion_duration",
        "Total cache insertion duration, in microseconds",
        lambda c: c.insertion_ns // 1000,
    ),
    ("nv_cache_util", "Cache utilization [0.0 - 1.0]", lambda c: round(c.utilization, 6)),
)


def _cache_metrics(
    models: list[_LoadedModel], labels: dict[int, Labels], response_cache: Any
) -> list[MetricFamily]:
    """Per-model cache counters (only models using the cache) and the cache's global gauges
    (only when the server has a cache), as Triton reports them."""
    families: list[MetricFamily] = []
    cached = [model for model in models if getattr(model, "response_cache", None) is not None]
    if cached:
        for name, help_text, value in _MODEL_CACHE_COUNTERS:
            family = MetricFamily(name, help_text, MetricType.COUNTER)
            for model in cached:
                family.add(value(model.stats), labels[id(model)])  # type: ignore[operator]
            families.append(family)
    if response_cache is not None:
        for name, help_text, value in _CACHE_GAUGES:
            family = MetricFamily(name, help_text, MetricType.GAUGE)
            family.add(value(response_cache))  # type: ignore[operator]
            families.append(family)
    return families


def _batch_close_metrics(models: list[_LoadedModel]) -> list[MetricFamily]:
    """trident_batch_close_total (a Trident addition): why each dynamic batch closed, for the
    models that batch dynamically (see docs/batching.md); absent when none does."""
    batching = [model for model in models if model.stats.batch_close_reasons]
    if not batching:
        return []
    family = MetricFamily(
        "trident_batch_close_total",
        "Number of dynamic batches closed, by the reason they closed",
        MetricType.COUNTER,
    )
    for model in batching:
        for reason, count in sorted(model.stats.batch_close_reasons.items()):
            reason_labels = Labels(
                (("model", model.name), ("reason", reason), ("version", str(model.version)))
            )
            family.add(count, reason_labels)
    return [family]


def _cpu_metrics() -> list[MetricFamily]:
    """nv_cpu_memory_* from /proc/meminfo (Linux); nothing elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        total = int(fields["MemTotal"].split()[0]) * 1024
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return []
    total_family = MetricFamily(
        "nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", MetricType.GAUGE
    )
    total_family.add(total)
    used_family = MetricFamily(
        "nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", MetricType.GAUGE
    )
    used_family.add(total - available)
    return [total_family, used_family]
