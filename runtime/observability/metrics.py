"""Prometheus metrics with Triton's family names, types, HELP texts and labels.

Rendered at scrape time from the same per-model counters the statistics extension reports
(runtime/core/stats.py), so the hot path pays nothing for metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

#: `reason` label values of nv_inference_request_failure; every series exists from load on.
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


class _LoadedModel(Protocol):
    """What rendering reads of a loaded model version (runtime/core/model_manager.py)."""

    name: str
    version: int
    stats: Any


# (family, type, HELP text, value of ModelStats in the family's unit)
_COUNTERS: tuple[tuple[str, str, str, object], ...] = (
    (
        "nv_inference_request_success",
        "counter",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_count",
        "counter",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "counter",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_pending_request_count",
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
        lambda s: s.pending,
    ),
    (
        "nv_inference_request_duration_us",
        "counter",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        lambda s: s.success.ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "counter",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "counter",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "counter",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "counter",
        "Cumulative inference compute output duration in microseconds (does not include cached "
        "requests)",
        lambda s: s.compute_output.ns // 1000,
    ),
)


def _labels(model: _LoadedModel, extra: str = "") -> str:
    name = model.name.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{model="{name}",{extra}version="{model.version}"}}'


def render_metrics(models: Iterable[_LoadedModel]) -> str:
    """The text exposition format (version 0.0.4) of every family, for every loaded version."""
    models = list(models)
    lines: list[str] = []
    family = "nv_inference_request_failure"
    lines.append(f"# HELP {family} Number of failed inference requests, all batch sizes")
    lines.append(f"# TYPE {family} counter")
    for model in models:
        for reason in FAILURE_REASONS:
            count = model.stats.failures_by_reason.get(reason, 0)
            reason_label = f'reason="{reason}",'
            lines.append(f"{family}{_labels(model, reason_label)} {count}")
    for family, kind, help_text, value in _COUNTERS:
        lines.append(f"# HELP {family} {help_text}")
        lines.append(f"# TYPE {family} {kind}")
        for model in models:
            lines.append(f"{family}{_labels(model)} {value(model.stats)}")  # type: ignore[operator]
    lines.extend(_cpu_metrics())
    return "\n".join(lines) + "\n"


def _cpu_metrics() -> list[str]:
    """nv_cpu_memory_* from /proc/meminfo (Linux); nothing elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        total = int(fields["MemTotal"].split()[0]) * 1024
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return []
    return [
        "# HELP nv_cpu_memory_total_bytes CPU total memory (RAM), in bytes",
        "# TYPE nv_cpu_memory_total_bytes gauge",
        f"nv_cpu_memory_total_bytes {total}",
        "# HELP nv_cpu_memory_used_bytes CPU used memory (RAM), in bytes",
        "# TYPE nv_cpu_memory_used_bytes gauge",
        f"nv_cpu_memory_used_bytes {total - available}",
    ]
