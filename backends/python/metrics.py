"""Custom metrics a Python model defines (`pb_utils.MetricFamily`), served on /metrics.

As in Triton, families are process-wide: two models creating a family of the same name, kind
and description share it, and a metric with the same labels is the same metric. The metrics
endpoint appends `render_custom_metrics()` to its own families, written by the server's one
Prometheus renderer (runtime/observability/exposition.py).
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Sequence

from trident.runtime.observability import exposition

from .errors import TritonModelException

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class Metric:
    """One series of a family (one set of label values)."""

    def __init__(
        self, family: MetricFamily, labels: dict[str, str], buckets: tuple[float, ...]
    ) -> None:
        self._family = family
        self._labels = labels
        self._buckets = buckets
        # Escaped once: a series' labels never change.
        self._exposition_labels = exposition.Labels(labels.items())
        self._lock = threading.Lock()
        self._value = 0.0
        self._bucket_counts = [0] * len(buckets)
        self._count = 0

    def increment(self, value: float) -> None:
        """Add `value` (counters only go up)."""
        kind = self._family.kind
        if kind == MetricKind.HISTOGRAM:
            raise TritonModelException("a histogram metric cannot be incremented: use observe()")
        if kind == MetricKind.COUNTER and value < 0:
            raise TritonModelException("a counter metric cannot be decremented")
        with self._lock:
            self._value += value

    def set(self, value: float) -> None:
        """Set a gauge."""
        if self._family.kind != MetricKind.GAUGE:
            raise TritonModelException("only gauge metrics can be set")
        with self._lock:
            self._value = float(value)

    def observe(self, value: float) -> None:
        """Record one observation in a histogram."""
        if self._family.kind != MetricKind.HISTOGRAM:
            raise TritonModelException("only histogram metrics can observe values")
        with self._lock:
            self._value += value
            self._count += 1
            for index, bound in enumerate(self._buckets):
                if value <= bound:
                    self._bucket_counts[index] += 1

    def value(self) -> float:
        """The current value of a counter or gauge."""
        if self._family.kind == MetricKind.HISTOGRAM:
            raise TritonModelException("a histogram metric has no single value")
        with self._lock:
            return self._value

    def _add_to(self, family: exposition.MetricFamily) -> None:
        with self._lock:
            value, count, buckets = self._value, self._count, list(self._bucket_counts)
        labels = self._exposition_labels
        if self._family.kind != MetricKind.HISTOGRAM:
            family.add(_number(value), labels)
            return
        bounds = [_number(bound) for bound in self._buckets]
        family.add_histogram(labels, bounds, buckets, _number(value), count)


class MetricFamily:
    """`MetricFamily(name, description, kind)`; `family.Metric(labels={...})` makes a series."""

    COUNTER = MetricKind.COUNTER
    GAUGE = MetricKind.GAUGE
    HISTOGRAM = MetricKind.HISTOGRAM

    def __new__(cls, name: str, description: str, kind: MetricKind) -> MetricFamily:
        return CUSTOM_METRICS.family(cls, name, description, MetricKind(kind))

    def _setup(self, name: str, description: str, kind: MetricKind) -> None:
        self.name = name
        self.description = description
        self.kind = kind
        self._lock = threading.Lock()
        self._metrics: dict[tuple[tuple[str, str], ...], Metric] = {}

    def Metric(  # Triton's capitalised name
        self, labels: dict[str, str] | None = None, buckets: Sequence[float] | None = None
    ) -> Metric:
        labels = dict(labels or {})
        for key, value in labels.items():
            if not isinstance(key, str) or not _LABEL.match(key) or not isinstance(value, str):
                raise TritonModelException(
                    f"metric labels must map names like 'model' to str values, got {key!r}: "
                    f"{value!r}"
                )
        if self.kind == MetricKind.HISTOGRAM:
            if not buckets:
                raise TritonModelException("a histogram metric needs 'buckets'")
            bounds = tuple(float(bound) for bound in buckets)
            if list(bounds) != sorted(set(bounds)):
                raise TritonModelException("histogram buckets must be increasing")
        elif buckets is not None:
            raise TritonModelException("only histogram metrics take 'buckets'")
        else:
            bounds = ()
        series = tuple(sorted(labels.items()))
        with self._lock:
            metric = self._metrics.get(series)
            if metric is None:
                metric = Metric(self, labels, bounds)
                self._metrics[series] = metric
            return metric

    def _exposition(self) -> exposition.MetricFamily:
        with self._lock:
            metrics = list(self._metrics.values())
        family = exposition.MetricFamily(self.name, self.description, _TYPES[self.kind])
        for metric in metrics:
            metric._add_to(family)
        return family


class CustomMetricsRegistry:
    """The families models created, by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, MetricFamily] = {}

    def family(
        self, cls: type[MetricFamily], name: str, description: str, kind: MetricKind
    ) -> MetricFamily:
        if not isinstance(name, str) or not _NAME.match(name):
            raise TritonModelException(f"invalid metric family name {name!r}")
        if name.startswith("nv_"):
            raise TritonModelException(
                f"metric family name {name!r} uses the 'nv_' prefix the server's own metrics use"
            )
        with self._lock:
            family = self._families.get(name)
            if family is None:
                family = object.__new__(cls)
                family._setup(name, description, kind)
                self._families[name] = family
            elif (family.kind, family.description) != (kind, description):
                raise TritonModelException(
                    f"metric family '{name}' already exists with a different kind or description"
                )
            return family

    def render(self) -> str:
        """Prometheus text for every custom family ('' when there is none)."""
        with self._lock:
            families = list(self._families.values())
        return exposition.render(family._exposition() for family in families)


_TYPES = {
    MetricKind.COUNTER: exposition.MetricType.COUNTER,
    MetricKind.GAUGE: exposition.MetricType.GAUGE,
    MetricKind.HISTOGRAM: exposition.MetricType.HISTOGRAM,
}


def _number(value: float) -> float:
    """Whole values print as integers (`3`, `le="1"`), as Triton's custom metrics do."""
    value = float(value)
    return int(value) if value.is_integer() else value


#: The process-wide registry (Triton's custom metrics live in the server's one registry too).
CUSTOM_METRICS = CustomMetricsRegistry()


def render_custom_metrics() -> str:
    return CUSTOM_METRICS.render()
