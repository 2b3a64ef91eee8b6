"""Per-model-version statistics: the one set of counters behind both the statistics extension
and the Prometheus metrics, so the two always agree.

Counters are updated on the event loop thread only (schedulers record after each batch), so they
need no locks. `ModelStats.snapshot` copies them into frozen `ModelStatistics`, the plain result
the statistics query returns; each frontend renders it in its own wire format.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from trident.runtime.errors import FailureReason
from trident.runtime.observability.metrics import FAILURE_REASONS


@dataclass(frozen=True, slots=True)
class DurationTotal:
    """A count of events and their summed duration in nanoseconds (Triton's
    StatisticDuration)."""

    count: int
    ns: int


@dataclass(frozen=True, slots=True)
class InferenceDurations:
    """Per-request totals of one model version, as Triton's InferStatistics names them."""

    success: DurationTotal
    fail: DurationTotal
    queue: DurationTotal
    compute_input: DurationTotal
    compute_infer: DurationTotal
    compute_output: DurationTotal
    cache_hit: DurationTotal
    cache_miss: DurationTotal


@dataclass(frozen=True, slots=True)
class BatchDurations:
    """Compute totals of the executions of one batch size (Triton's InferBatchStatistics)."""

    batch_size: int
    compute_input: DurationTotal
    compute_infer: DurationTotal
    compute_output: DurationTotal


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    """The statistics of one loaded model version at one moment."""

    name: str
    version: int
    #: Wall-clock time of the last request that finished, in ms since the epoch (0: none yet).
    last_inference_ms: int
    inference_count: int
    execution_count: int
    inference: InferenceDurations
    #: One entry per batch size executed, by increasing size.
    batches: tuple[BatchDurations, ...]
    #: Trident's addition: why each dynamic batch closed -> count, in first-seen order
    #: (docs/batching.md).
    batch_close_reasons: Mapping[str, int]


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def total(self) -> DurationTotal:
        return DurationTotal(self.count, self.ns)


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStats:
    """Counters for one loaded model version (the semantics of Triton's statistics extension)."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    failures_by_reason: dict[FailureReason, int] = field(
        default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0)
    )
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    pending: int = 0
    batches: dict[int, BatchStats] = field(default_factory=dict)
    #: Why each dynamic batch closed ("full", "preferred", "delay", ...) -> count.
    batch_close_reasons: dict[str, int] = field(default_factory=dict)

    def record_execution(
        self,
        batch_size: int,
        start_ns: int,
        input_end_ns: int,
        output_start_ns: int,
        end_ns: int,
    ) -> None:
        """One backend execution of `batch_size` inferences."""
        input_ns = max(0, input_end_ns - start_ns)
        infer_ns = max(0, output_start_ns - input_end_ns)
        output_ns = max(0, end_ns - output_start_ns)
        self.execution_count += 1
        self.inference_count += batch_size
        batch = self.batches.get(batch_size)
        if batch is None:
            batch = self.batches[batch_size] = BatchStats()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def record_failed_execution(self, batch_size: int, start_ns: int, end_ns: int) -> None:
        """An execution whose model raised for the whole batch. Triton still counts it as an
        execution of `batch_size` inferences (its backends report the batch either way); the
        requests themselves are counted as failures (`record_failure`, reason BACKEND). With no
        timings from the model, the whole span counts as compute_infer."""
        self.record_execution(batch_size, start_ns, start_ns, end_ns, end_ns)

    def record_success(
        self,
        arrival_ns: int,
        queue_end_ns: int,
        start_ns: int,
        input_end_ns: int,
        output_start_ns: int,
        end_ns: int,
    ) -> None:
        """One request that completed; compute phases are the execution it ran in."""
        self.success.add(end_ns - arrival_ns)
        self.queue.add(queue_end_ns - arrival_ns)
        self.compute_input.add(max(0, input_end_ns - start_ns))
        self.compute_infer.add(max(0, output_start_ns - input_end_ns))
        self.compute_output.add(max(0, end_ns - output_start_ns))
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_cache_hit(
        self, arrival_ns: int, lookup_start_ns: int, end_ns: int, lookup_ns: int
    ) -> None:
        """A request answered from the response cache: a success whose queue time runs up to
        the lookup; never an execution or a compute phase (Triton's semantics)."""
        self.success.add(end_ns - arrival_ns)
        self.queue.add(max(0, lookup_start_ns - arrival_ns))
        self.cache_hit.add(lookup_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_cache_miss(self, ns: int) -> None:
        """A cache miss: lookup plus insertion time (the model's run counts as usual)."""
        self.cache_miss.add(ns)

    def record_failure(self, reason: FailureReason, arrival_ns: int, end_ns: int) -> None:
        self.fail.add(end_ns - arrival_ns)
        self.failures_by_reason[reason] += 1
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_batch_closed(self, reason: str) -> None:
        self.batch_close_reasons[reason] = self.batch_close_reasons.get(reason, 0) + 1

    def snapshot(self, name: str, version: int) -> ModelStatistics:
        """A frozen copy of the counters, for the statistics query."""
        return ModelStatistics(
            name=name,
            version=version,
            last_inference_ms=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
            inference=InferenceDurations(
                success=self.success.total(),
                fail=self.fail.total(),
                queue=self.queue.total(),
                compute_input=self.compute_input.total(),
                compute_infer=self.compute_infer.total(),
                compute_output=self.compute_output.total(),
                cache_hit=self.cache_hit.total(),
                cache_miss=self.cache_miss.total(),
            ),
            batches=tuple(
                BatchDurations(
                    size,
                    batch.compute_input.total(),
                    batch.compute_infer.total(),
                    batch.compute_output.total(),
                )
                for size, batch in sorted(self.batches.items())
            ),
            # str(): a reason may be a StrEnum; its value is what clients see.
            batch_close_reasons={
                str(reason): count for reason, count in self.batch_close_reasons.items()
            },
        )
