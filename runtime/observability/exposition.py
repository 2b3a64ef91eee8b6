"""Prometheus' text exposition format (version 0.0.4), the one renderer every metric source uses:
the server's `nv_*` families (metrics.py), a Python model's custom metrics
(backends/python/metrics.py) and the LLM engines' `vllm:*` families (backends/llm/prometheus.py).

Why not `prometheus_client`: its exposition appends `_total` to the name of every counter family
(`nv_inference_request_success` would be served as `nv_inference_request_success_total`), while
Triton's families are counters without that suffix, and dashboards query Triton's names.

The format's escaping rules, applied here and nowhere else:
- label values: `\\` -> `\\\\`, `"` -> `\\"`, newline -> `\\n`;
- HELP text: `\\` -> `\\\\`, newline -> `\\n`.
Metric and label names are not escaped (the format has no escaping for them): the sources use
fixed names, and custom names are checked against Prometheus' name rule where they are made.

Values: an int prints as an integer (`12`), a float as Python's repr (`0.25`, `1.0`), infinities
as `+Inf` / `-Inf` and NaN as `NaN`; each source chooses int or float for what it reports.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


class MetricType(enum.StrEnum):
    """A family's `# TYPE`."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"
    UNTYPED = "untyped"


def escape_label_value(value: str) -> str:
    """A label value as it goes between the quotes."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """A HELP text as it goes after the family name."""
    if "\\" in text or "\n" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n")
    return text


def format_value(value: float) -> str:
    """A sample value (or an `le` bound) as the format writes it."""
    if type(value) is int:
        return str(value)
    if isinstance(value, int):  # bool, numpy-free int subclasses
        return str(int(value))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class Labels:
    """A label set, escaped once and reused for every sample that carries it (the same model's
    series in every family). Pairs keep the order given."""

    __slots__ = ("text",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.text = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)

    def extended(self, *pairs: tuple[str, str]) -> Labels:
        """These labels followed by `pairs`."""
        more = Labels(pairs)
        if self.text:
            more.text = f"{self.text},{more.text}" if more.text else self.text
        return more


NO_LABELS = Labels()


@dataclass(slots=True)
class MetricFamily:
    """One family: `# HELP` and `# TYPE` once, then its samples in the order added."""

    name: str
    help: str
    type: MetricType
    _samples: list[str] = field(default_factory=list)

    def add(self, value: float, labels: Labels = NO_LABELS, suffix: str = "") -> None:
        """One sample of `name + suffix` (suffix: `_bucket`, `_sum`, `_count` or "")."""
        if labels.text:
            self._samples.append(f"{self.name}{suffix}{{{labels.text}}} {format_value(value)}")
        else:
            self._samples.append(f"{self.name}{suffix} {format_value(value)}")

    def add_histogram(
        self,
        labels: Labels,
        bounds: Sequence[float],
        cumulative_counts: Sequence[int],
        total: float,
        count: int,
    ) -> None:
        """A histogram's series: one `_bucket` per bound (cumulative counts), `le="+Inf"` with
        `count`, then `_sum` and `_count`."""
        for bound, hits in zip(bounds, cumulative_counts, strict=False):
            self.add(hits, labels.extended(("le", format_value(bound))), "_bucket")
        self.add(count, labels.extended(("le", "+Inf")), "_bucket")
        self.add(total, labels, "_sum")
        self.add(count, labels, "_count")

    def lines(self) -> list[str]:
        """The family's lines, header first."""
        return [
            f"# HELP {self.name} {escape_help(self.help)}",
            f"# TYPE {self.name} {self.type}",
            *self._samples,
        ]


def render(families: Iterable[MetricFamily]) -> str:
    """The exposition of `families`, each line ending in a newline ("" for no family)."""
    lines = [line for family in families for line in family.lines()]
    return "\n".join(lines) + "\n" if lines else ""
