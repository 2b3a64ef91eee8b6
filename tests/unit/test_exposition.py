"""The one Prometheus text renderer (runtime/observability/exposition.py): escaping, values,
histograms, and every metric source rendered through it, read back by prometheus_client's own
parser (an independent reading of the format)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trident.backends.python.metrics import CustomMetricsRegistry, MetricFamily, MetricKind
from trident.runtime.core.stats import ModelStats
from trident.runtime.observability.exposition import (
    Labels,
    MetricType,
    escape_help,
    escape_label_value,
    format_value,
    render,
)
from trident.runtime.observability.exposition import MetricFamily as Family
from trident.runtime.observability.metrics import render_metrics

#: A value with every character the format escapes, and a quote-free one with none.
NASTY = 'a\\b"c\nd'


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("back\\slash", "back\\\\slash"),
        ('qu"ote', 'qu\\"ote'),
        ("new\nline", "new\\nline"),
        (NASTY, 'a\\\\b\\"c\\nd'),
        ("\\n", "\\\\n"),  # a backslash then an n is not a newline
    ],
)
def test_label_values_escape_backslash_quote_and_newline(raw: str, escaped: str) -> None:
    assert escape_label_value(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("Number of requests", "Number of requests"),
        ("C:\\path", "C:\\\\path"),
        ("two\nlines", "two\\nlines"),
        ('keeps "quotes"', 'keeps "quotes"'),  # HELP does not escape quotes
    ],
)
def test_help_escapes_backslash_and_newline_only(raw: str, escaped: str) -> None:
    assert escape_help(raw) == escaped


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (12, "12"),
        (2**64, "18446744073709551616"),
        (True, "1"),
        (0.25, "0.25"),
        (1.0, "1.0"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_values_print_ints_as_integers_and_floats_as_floats(value: float, text: str) -> None:
    assert format_value(value) == text


def test_a_family_renders_help_type_and_samples_in_order() -> None:
    family = Family("requests", "Requests\nseen", MetricType.COUNTER)
    labels = Labels((("model", NASTY), ("version", "1")))
    family.add(3, labels)
    family.add(4, labels.extended(("reason", "x")))
    family.add(5)
    assert render([family]) == (
        "# HELP requests Requests\\nseen\n"
        "# TYPE requests counter\n"
        'requests{model="a\\\\b\\"c\\nd",version="1"} 3\n'
        'requests{model="a\\\\b\\"c\\nd",version="1",reason="x"} 4\n'
        "requests 5\n"
    )


def test_no_family_renders_nothing() -> None:
    assert render([]) == ""


def test_extending_empty_labels() -> None:
    assert Labels().extended(("le", "1")).text == 'le="1"'
    assert Labels((("a", "1"),)).extended().text == 'a="1"'


def test_a_histogram_has_cumulative_buckets_inf_sum_and_count() -> None:
    family = Family("latency", "Latency", MetricType.HISTOGRAM)
    family.add_histogram(Labels((("m", "x"),)), [0.5, 1], [1, 3], 2.5, 4)
    assert family.lines()[2:] == [
        'latency_bucket{m="x",le="0.5"} 1',
        'latency_bucket{m="x",le="1"} 3',
        'latency_bucket{m="x",le="+Inf"} 4',
        'latency_sum{m="x"} 2.5',
        'latency_count{m="x"} 4',
    ]


def _parse(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


@dataclass
class _Model:
    name: str
    version: int
    stats: ModelStats


def test_server_metrics_read_back_with_their_model_names_intact() -> None:
    stats = ModelStats()
    stats.record_failure("BACKEND", 0, 1_000)
    text = render_metrics([_Model(NASTY, 2, stats)])
    families = _parse(text)
    failures = families["nv_inference_request_failure"]
    backend = [s for s in failures.samples if s.labels["reason"] == "BACKEND"]
    assert backend[0].labels == {"model": NASTY, "reason": "BACKEND", "version": "2"}
    assert backend[0].value == 1
    assert families["nv_inference_count"].documentation == (
        "Number of inferences performed (does not include cached requests)"
    )


def test_custom_metrics_escape_labels_and_descriptions() -> None:
    registry = CustomMetricsRegistry()
    gauge = registry.family(
        MetricFamily, "custom_gauge", "A gauge\nwith a \\ in it", MetricKind.GAUGE
    )
    gauge.Metric(labels={"path": NASTY}).set(1.5)
    histogram = registry.family(MetricFamily, "custom_seconds", "Seconds", MetricKind.HISTOGRAM)
    histogram.Metric(labels={"path": NASTY}, buckets=[0.5, 1.0]).observe(0.75)
    text = registry.render()
    assert 'custom_seconds_bucket{path="a\\\\b\\"c\\nd",le="1"} 1' in text.splitlines()
    families = _parse(text)
    parsed_gauge = families["custom_gauge"]
    assert parsed_gauge.documentation == "A gauge\nwith a \\ in it"
    assert [(s.labels, s.value) for s in parsed_gauge.samples] == [({"path": NASTY}, 1.5)]
    buckets = {
        s.labels["le"]: s.value
        for s in families["custom_seconds"].samples
        if s.name == "custom_seconds_bucket"
    }
    assert buckets == {"0.5": 0, "1": 1, "+Inf": 1}
