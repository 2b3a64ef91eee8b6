"""The vllm:* metric families rendered from engine snapshots."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from trident.backends.llm.engine import EngineMetrics, EngineStats
from trident.backends.llm.prometheus import ModelSample, render


def _stats(used: int, total: int, running: int = 1) -> EngineStats:
    return EngineStats(running, 2, used, total, used / total, 0, 0, 0, used, 1.0, 1.0, 5)


def _parse(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def test_counters_gauges_and_histograms_per_model_version() -> None:
    metrics = EngineMetrics(max_model_len=128, max_num_batched_tokens=64)
    metrics.observe_scheduled(0.01, 7)
    metrics.observe_step(
        num_tokens=7,
        new_generation_tokens=1,
        ttfts=[0.02],
        itls=[],
        running=1,
        waiting=0,
        kv_usage=0.5,
    )
    metrics.observe_step(
        num_tokens=1,
        new_generation_tokens=1,
        ttfts=[],
        itls=[0.03],
        running=1,
        waiting=0,
        kv_usage=0.5,
    )
    metrics.observe_finished("length", 0.05, 2)
    sample = ModelSample("chat", 1, [metrics.snapshot()], [_stats(3, 12)])
    text = render([sample])
    values = _parse(text)
    labels = 'model="chat",version="1"'
    assert values[f"vllm:prompt_tokens_total{{{labels}}}"] == 7
    assert values[f"vllm:generation_tokens_total{{{labels}}}"] == 2
    assert values[f'vllm:request_success_total{{{labels},finished_reason="length"}}'] == 1
    assert values[f"vllm:num_requests_running{{{labels}}}"] == 1
    assert values[f"vllm:num_requests_waiting{{{labels}}}"] == 2
    assert values[f"vllm:kv_cache_usage_perc{{{labels}}}"] == 0.25
    assert values[f"vllm:time_to_first_token_seconds_count{{{labels}}}"] == 1
    assert values[f'vllm:time_to_first_token_seconds_bucket{{{labels},le="0.04"}}'] == 1
    assert values[f'vllm:time_to_first_token_seconds_bucket{{{labels},le="0.01"}}'] == 0
    assert values[f'vllm:inter_token_latency_seconds_bucket{{{labels},le="+Inf"}}'] == 1
    assert values[f"vllm:e2e_request_latency_seconds_sum{{{labels}}}"] == pytest.approx(0.05)
    # Each family is declared once.
    assert text.count("# TYPE vllm:prompt_tokens_total counter") == 1


def test_instances_of_one_model_version_are_added_together() -> None:
    first, second = EngineMetrics(), EngineMetrics()
    first.observe_scheduled(0.0, 3)
    second.observe_scheduled(0.0, 4)
    sample = ModelSample(
        "m", 2, [first.snapshot(), second.snapshot()], [_stats(1, 10), _stats(4, 10, running=2)]
    )
    values = _parse(render([sample]))
    assert values['vllm:prompt_tokens_total{model="m",version="2"}'] == 7
    assert values['vllm:num_requests_running{model="m",version="2"}'] == 3
    assert values['vllm:kv_cache_usage_perc{model="m",version="2"}'] == 0.25


def test_nothing_is_rendered_without_llm_models() -> None:
    assert render([]) == ""
