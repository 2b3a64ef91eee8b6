"""What every scheduler does once an execution ended or a request cannot run: record the
statistics Triton keeps and hand each response (or error) to its request's responder.

Shared by the direct, dynamic and sequence schedulers, so the three count alike: a model that
raised is an execution all the same (Triton counts it), a failed response is a failure with its
error's reason, a decoupled model's requests succeed once its execution ended (it sent its
responses itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import TridentError

if TYPE_CHECKING:
    from trident.runtime.core.instances import Outcome
    from trident.runtime.core.stats import ModelStats


def fail(stats: ModelStats, request: InFlightRequest, error: TridentError, now: int) -> None:
    """Fail one request that did not run (or whose whole batch failed)."""
    stats.record_failure(error.failure_reason, request.arrival_ns, now)
    request.responder.fail(error)


def fail_execution(
    stats: ModelStats,
    requests: Sequence[InFlightRequest],
    size: int,
    error: TridentError,
    queue_end: int,
    now: int,
) -> None:
    """The model ran `size` inferences and raised: count the execution, fail every request."""
    stats.record_failed_execution(size, queue_end, now)
    for request in requests:
        fail(stats, request, error, now)


def deliver_one(
    stats: ModelStats, request: InFlightRequest, size: int, outcome: Outcome, queue_end: int
) -> None:
    """Record a single request's execution and send its response (the direct scheduler's
    path: no batch list, no loop)."""
    start, input_end = outcome.start_ns, outcome.input_end_ns
    output_start, end = outcome.output_start_ns, outcome.end_ns
    stats.record_execution(size, start, input_end, output_start, end)
    responses = outcome.responses
    if responses is None:  # decoupled: the instance sent its responses itself
        stats.record_success(request.arrival_ns, queue_end, start, input_end, output_start, end)
        return
    response = responses[0]
    if response.error is not None:
        stats.record_failure(response.error.failure_reason, request.arrival_ns, end)
    else:
        stats.record_success(request.arrival_ns, queue_end, start, input_end, output_start, end)
    request.responder.send(response)


def deliver(
    stats: ModelStats,
    requests: Sequence[InFlightRequest],
    size: int,
    outcome: Outcome,
    queue_end: int,
) -> None:
    """Record a batch's execution (`size` inferences) and send each request its response
    (`outcome.responses` holds one per request, in the same order)."""
    start, input_end = outcome.start_ns, outcome.input_end_ns
    output_start, end = outcome.output_start_ns, outcome.end_ns
    stats.record_execution(size, start, input_end, output_start, end)
    responses = outcome.responses
    if responses is None:  # decoupled: the instance sent its responses itself
        for request in requests:
            stats.record_success(request.arrival_ns, queue_end, start, input_end, output_start, end)
        return
    for request, response in zip(requests, responses):
        if response.error is not None:
            stats.record_failure(response.error.failure_reason, request.arrival_ns, end)
        else:
            stats.record_success(request.arrival_ns, queue_end, start, input_end, output_start, end)
        request.responder.send(response)
