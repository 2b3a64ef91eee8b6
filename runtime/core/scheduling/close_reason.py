"""Why a batch closed: the `reason` label of `trident_batch_close_total` and the keys of the
statistics' `batch_close_reasons`. A `CloseReason` is a `str`, so what is exported is its value.
"""

from __future__ import annotations

from enum import StrEnum


class CloseReason(StrEnum):
    """Why the dynamic batcher (or the sequence batcher) ran a batch when it did."""

    #: It holds max_batch_size inferences, or the next queued request would not fit.
    MAX_BATCH_SIZE = "max_batch_size"
    #: It reached a preferred_batch_size (or could not grow closer to the largest one).
    PREFERRED_SIZE = "preferred_size"
    #: Its oldest request waited max_queue_delay_microseconds and no more requests came.
    QUEUE_DELAY = "queue_delay"
    #: max_queue_delay_microseconds is 0 and the queue held no more requests.
    NO_MORE_REQUESTS = "no_more_requests"
    #: Its requests were ready to run but every instance was busy; it closed when one became free.
    INSTANCE_FREE = "instance_free"
    #: Sequence batcher, direct strategy: the ready slots reached minimum_slot_utilization.
    SLOT_UTILIZATION = "slot_utilization"


#: The reasons the dynamic batcher gives; each has a series from load on, like Triton's metrics.
DYNAMIC_CLOSE_REASONS = (
    CloseReason.MAX_BATCH_SIZE,
    CloseReason.PREFERRED_SIZE,
    CloseReason.QUEUE_DELAY,
    CloseReason.NO_MORE_REQUESTS,
    CloseReason.INSTANCE_FREE,
)
