"""Engine metrics: counters and histograms, recorded by the engine thread, read by the serving
layer, which renders them in Prometheus' text format under vLLM-like names.

The API is two calls: the engine records (`observe_*`, `count_*`), anyone reads `snapshot()`, a
consistent copy taken under one lock. Histograms keep Prometheus' shape: fixed upper bounds,
cumulative counts per bound (the last one is +Inf and equals `count`), a sum and a count.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

#: vLLM's bucket bounds (seconds) for the latency histograms.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


def token_buckets(max_value: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50... up to max_value (vLLM's build_1_2_5_buckets)."""
    bounds: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(bounds)
            bounds.append(float(value))
        exponent += 1


@dataclass(frozen=True)
class HistogramSnapshot:
    """A histogram at one instant, as Prometheus renders it."""

    #: Upper bounds, increasing; +Inf is implied after the last.
    bounds: tuple[float, ...]
    #: Observations <= each bound, then the +Inf bucket: len(bounds) + 1 values, cumulative.
    cumulative_counts: tuple[int, ...]
    sum: float
    count: int


class Histogram:
    """A fixed-bucket histogram. Not locked: EngineMetrics guards it."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self._sum += value
        self._count += 1

    def snapshot(self) -> HistogramSnapshot:
        cumulative: list[int] = []
        running = 0
        for c in self._counts:
            running += c
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), self._sum, self._count)


@dataclass(frozen=True)
class EngineMetricsSnapshot:
    """Every engine metric at one instant. Suggested Prometheus names in brackets."""

    prompt_tokens_total: int  # vllm:prompt_tokens_total (counter)
    generation_tokens_total: int  # vllm:generation_tokens_total (counter)
    preemptions_total: int  # vllm:num_preemptions_total (counter)
    #: Finished requests by finish reason ("stop", "length", "abort").
    request_success_total: dict[str, int]  # vllm:request_success_total{finished_reason=...}
    num_requests_running: int  # vllm:num_requests_running (gauge)
    num_requests_waiting: int  # vllm:num_requests_waiting (gauge)
    kv_cache_usage: float  # vllm:kv_cache_usage_perc (gauge, 0..1)
    prefix_cache_queries_total: int  # vllm:prefix_cache_queries_total (counter, in tokens)
    prefix_cache_hits_total: int  # vllm:prefix_cache_hits_total (counter, in tokens)
    time_to_first_token_seconds: HistogramSnapshot  # vllm:time_to_first_token_seconds
    inter_token_latency_seconds: HistogramSnapshot  # vllm:inter_token_latency_seconds
    e2e_request_latency_seconds: HistogramSnapshot  # vllm:e2e_request_latency_seconds
    request_queue_time_seconds: HistogramSnapshot  # vllm:request_queue_time_seconds
    request_prompt_tokens: HistogramSnapshot  # vllm:request_prompt_tokens
    request_generation_tokens: HistogramSnapshot  # vllm:request_generation_tokens
    iteration_tokens_total: HistogramSnapshot  # vllm:iteration_tokens_total (tokens per step)


class EngineMetrics:
    """Thread-safe counters and histograms of one engine.

    Times are in seconds (time.monotonic). The engine records; readers call `snapshot()`."""

    def __init__(self, max_model_len: int = 8192, max_num_batched_tokens: int = 512) -> None:
        self._lock = threading.Lock()
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._preemptions = 0
        self._success: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}
        self._running = 0
        self._waiting = 0
        self._kv_usage = 0.0
        self._prefix_queries = 0
        self._prefix_hits = 0
        self._ttft = Histogram(TTFT_BUCKETS)
        self._itl = Histogram(ITL_BUCKETS)
        self._e2e = Histogram(E2E_BUCKETS)
        self._queue = Histogram(E2E_BUCKETS)
        self._prompt_hist = Histogram(token_buckets(max_model_len))
        self._generation_hist = Histogram(token_buckets(max_model_len))
        self._iteration = Histogram(token_buckets(max_num_batched_tokens))

    # -- recording (engine thread) --------------------------------------------------------------
    def observe_step(
        self,
        *,
        num_tokens: int,
        new_generation_tokens: int,
        ttfts: list[float],
        itls: list[float],
        running: int,
        waiting: int,
        kv_usage: float,
    ) -> None:
        """Record one engine step: tokens computed, tokens generated, first-token and
        inter-token latencies of the requests that produced a token, and the gauges."""
        with self._lock:
            self._iteration.observe(num_tokens)
            self._generation_tokens += new_generation_tokens
            for t in ttfts:
                self._ttft.observe(t)
            for t in itls:
                self._itl.observe(t)
            self._running = running
            self._waiting = waiting
            self._kv_usage = kv_usage

    def observe_scheduled(self, queue_time: float, num_prompt_tokens: int) -> None:
        """A request got its first step: its time in the waiting queue, and its prompt."""
        with self._lock:
            self._queue.observe(queue_time)
            self._prompt_tokens += num_prompt_tokens
            self._prompt_hist.observe(num_prompt_tokens)

    def observe_finished(self, finish_reason: str, e2e: float, num_generated: int) -> None:
        """A request ended (any reason)."""
        with self._lock:
            self._success[finish_reason] = self._success.get(finish_reason, 0) + 1
            self._e2e.observe(e2e)
            self._generation_hist.observe(num_generated)

    def count_preemptions(self, n: int) -> None:
        with self._lock:
            self._preemptions += n

    def count_prefix_cache(self, queries: int, hits: int) -> None:
        with self._lock:
            self._prefix_queries += queries
            self._prefix_hits += hits

    # -- reading (any thread) -------------------------------------------------------------------
    def snapshot(self) -> EngineMetricsSnapshot:
        """A consistent copy of every metric."""
        with self._lock:
            return EngineMetricsSnapshot(
                prompt_tokens_total=self._prompt_tokens,
                generation_tokens_total=self._generation_tokens,
                preemptions_total=self._preemptions,
                request_success_total=dict(self._success),
                num_requests_running=self._running,
                num_requests_waiting=self._waiting,
                kv_cache_usage=self._kv_usage,
                prefix_cache_queries_total=self._prefix_queries,
                prefix_cache_hits_total=self._prefix_hits,
                time_to_first_token_seconds=self._ttft.snapshot(),
                inter_token_latency_seconds=self._itl.snapshot(),
                e2e_request_latency_seconds=self._e2e.snapshot(),
                request_queue_time_seconds=self._queue.snapshot(),
                request_prompt_tokens=self._prompt_hist.snapshot(),
                request_generation_tokens=self._generation_hist.snapshot(),
                iteration_tokens_total=self._iteration.snapshot(),
            )
