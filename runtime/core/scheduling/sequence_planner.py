"""The sequence batcher's decisions, as a plain object: which sequence holds which slot of which
instance, which requests run together next, and when idle sequences are let go.

Nothing here touches threads, sockets or the clock: callers pass `now` (monotonic ns) to every
method, feed requests with `enqueue`, take batches with `next_batch`, and report them done with
`complete`. Requests a decision failed (cancelled, timed out) wait in `take_failures()`.

Each model instance owns `slots_per_instance` slots. A sequence gets a slot at its START request
(or waits in the backlog, in arrival order, until one frees) and keeps it until its END request
has been taken into a batch, or until it has been idle for `max_sequence_idle_microseconds`. An
instance runs one batch at a time, holding at most one request per sequence, so the requests of
a sequence run in order, one after the other, while different sequences interleave freely.

- direct: the batch is laid out by slot; an empty slot below the highest ready one is filled with
  a "null" request whose READY control is false, so each sequence keeps its batch position.
- oldest: the oldest ready requests of the instance's candidate sequences form the batch, like
  the dynamic batcher (full batch, preferred size, or max_queue_delay_microseconds).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import StrEnum

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import (
    CancelledError,
    InvalidArgumentError,
    TridentError,
    UnavailableError,
)
from trident.runtime.types import Tensor

from . import sequence_tensors as tensors
from .base import cancelled_error
from .close_reason import CloseReason
from .direct import batch_size_of
from .sequence_config import SequenceSettings, Strategy

logger = logging.getLogger("trident.scheduling.sequence")

#: How many released correlation IDs are remembered to explain a late request's error.
RELEASED_MEMORY = 4096


class Release(StrEnum):
    """Why a sequence gave up its slot (remembered to explain a late request's error)."""

    ENDED = "ended"
    IDLE = "idle"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed out"


_REASON_TEXT = {
    Release.ENDED: "already ended with its END request",
    Release.CANCELLED: "was ended because one of its requests was cancelled",
    Release.TIMED_OUT: "was ended because one of its requests timed out",
}


@dataclass(slots=True)
class Queued:
    request: InFlightRequest
    enqueued_ns: int


class Sequence:
    """One live sequence: its queued requests, its slot, and its implicit state."""

    __slots__ = (
        "correlation_id",
        "instance",
        "last_active_ns",
        "mapped",
        "queue",
        "running",
        "slot",
        "states",
    )

    def __init__(self, correlation_id: int | str, now: int) -> None:
        self.correlation_id = correlation_id
        self.queue: deque[Queued] = deque()
        #: (instance, slot) once the sequence holds a slot; -1 while in the backlog.
        self.instance = -1
        self.slot = -1
        self.last_active_ns = now
        #: True until the END request is queued: new requests with this ID join this sequence.
        self.mapped = True
        #: True while one of its requests executes.
        self.running = False
        #: Implicit state: the next value of each state input, by input name.
        self.states: dict[str, Tensor] = {}

    def __repr__(self) -> str:
        return f"Sequence({self.correlation_id!r}, slot={self.instance}/{self.slot})"


@dataclass(slots=True)
class BatchEntry:
    request: InFlightRequest
    #: None for a null request (a direct-strategy slot without a ready request).
    sequence: Sequence | None
    slot: int


@dataclass(slots=True)
class PlannedBatch:
    """Requests that run together on one instance."""

    instance: int
    entries: list[BatchEntry]
    formed_ns: int
    #: Why the batch ran now, in the dynamic batcher's words (its close reasons), plus
    #: SLOT_UTILIZATION for a direct batch that reached minimum_slot_utilization.
    reason: CloseReason

    @property
    def requests(self) -> list[InFlightRequest]:
        return [entry.request for entry in self.entries]

    @property
    def real(self) -> list[BatchEntry]:
        return [entry for entry in self.entries if entry.sequence is not None]


@dataclass(slots=True)
class _Instance:
    slots: list[Sequence | None]
    busy: bool = False
    #: When a batch held back by max_queue_delay_microseconds is due (0 = none).
    due_ns: int = 0
    #: Being removed: runs the sequences it holds to their end, takes no new ones.
    retired: bool = False


@dataclass
class SequencePlanner:
    """Slots, backlog and batch formation for one model version (see the module docstring)."""

    model_name: str
    settings: SequenceSettings
    instance_count: int
    _instances: list[_Instance] = field(init=False)
    _active: dict[int | str, Sequence] = field(init=False, default_factory=dict)
    _backlog: deque[Sequence] = field(init=False, default_factory=deque)
    _released: OrderedDict[int | str, Release] = field(init=False, default_factory=OrderedDict)
    _failures: list[tuple[InFlightRequest, TridentError]] = field(init=False, default_factory=list)
    _pending: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.instance_count < 1:
            raise ValueError("the sequence batcher needs at least one instance")
        self._instances = [
            _Instance([None] * self.settings.slots_per_instance) for _ in range(self.instance_count)
        ]

    # ------------------------------------------------------------------ requests in

    def enqueue(self, request: InFlightRequest, now: int) -> Sequence:
        """Queue a request on its sequence; raise InvalidArgumentError (Triton's messages) for a
        request the sequence batcher cannot take."""
        correlation_id = request.sequence_id
        if correlation_id == 0 or correlation_id == "":
            raise InvalidArgumentError(
                f"inference request to model '{self.model_name}' must specify a non-zero or "
                "non-empty correlation ID"
            )
        if self.settings.batched and batch_size_of(request, True) > 1:
            raise InvalidArgumentError(
                f"inference request to model '{self.model_name}' must specify batch-size 1 due "
                "to requirements of sequence batcher"
            )
        tensors.check_correlation_id(self.settings, self.model_name, correlation_id)
        sequence = self._active.get(correlation_id)
        if sequence is None:
            if not request.sequence_start:
                raise InvalidArgumentError(self._missing_start(correlation_id))
            sequence = Sequence(correlation_id, now)
            self._released.pop(correlation_id, None)
            self._active[correlation_id] = sequence
            self._assign(sequence)
        elif request.sequence_start:
            # Triton's behaviour: the new START restarts the sequence in place (its state is
            # reset when that request runs); the requests queued before it still run first.
            logger.warning(
                "sequence %s for model '%s' has a conflict: the previous sequence did not end "
                "before this sequence start, so it is ended early",
                correlation_id,
                self.model_name,
            )
        sequence.queue.append(Queued(request, now))
        sequence.last_active_ns = now
        self._pending += 1
        if request.sequence_end:
            sequence.mapped = False
            del self._active[correlation_id]
            self._remember(correlation_id, Release.ENDED)
        return sequence

    def _missing_start(self, correlation_id: int | str) -> str:
        message = (
            f"inference request for sequence {correlation_id} to model '{self.model_name}' must "
            "specify the START flag on the first request of the sequence"
        )
        reason = self._released.get(correlation_id)
        if reason == Release.IDLE:
            idle_us = self.settings.max_idle_ns // 1000
            message += (
                f" (sequence {correlation_id} was released after being idle for more than "
                f"{idle_us} us, the model's max_sequence_idle_microseconds; start it again "
                "with sequence_start)"
            )
        elif reason is not None:
            message += f" (sequence {correlation_id} {_REASON_TEXT[reason]}; start a new one)"
        return message

    def _remember(self, correlation_id: int | str, reason: Release) -> None:
        self._released[correlation_id] = reason
        self._released.move_to_end(correlation_id)
        while len(self._released) > RELEASED_MEMORY:
            self._released.popitem(last=False)

    # ------------------------------------------------------------------ slots

    def _assign(self, sequence: Sequence) -> None:
        """Give the sequence the lowest free slot (spreading sequences over instances first),
        or put it at the back of the backlog."""
        for slot in range(self.settings.slots_per_instance):
            for index, instance in enumerate(self._instances):
                if instance.slots[slot] is None and not instance.retired:
                    self._bind(sequence, index, slot)
                    return
        self._backlog.append(sequence)

    def _bind(self, sequence: Sequence, index: int, slot: int) -> None:
        sequence.instance, sequence.slot = index, slot
        self._instances[index].slots[slot] = sequence

    def _release(self, sequence: Sequence, reason: Release) -> None:
        """The sequence is over: free its slot for the oldest backlogged sequence."""
        correlation_id = sequence.correlation_id
        if sequence.mapped:
            sequence.mapped = False
            del self._active[correlation_id]
        if reason != Release.ENDED and correlation_id not in self._active:
            self._remember(correlation_id, reason)
        if sequence.instance < 0:
            if sequence in self._backlog:
                self._backlog.remove(sequence)
            return
        index, slot = sequence.instance, sequence.slot
        sequence.instance = sequence.slot = -1
        self._instances[index].slots[slot] = None
        if self._backlog and not self._instances[index].retired:
            self._bind(self._backlog.popleft(), index, slot)

    # ------------------------------------------------------------------ instances

    def add_instance(self) -> int:
        """A new instance (instance_group grew); backlogged sequences move onto its slots.
        Returns its index."""
        index = len(self._instances)
        instance = _Instance([None] * self.settings.slots_per_instance)
        self._instances.append(instance)
        for slot in range(len(instance.slots)):
            if not self._backlog:
                break
            self._bind(self._backlog.popleft(), index, slot)
        return index

    def retire(self, index: int) -> None:
        """Stop giving the instance new sequences; the ones it holds run to their end (or
        until released as idle), since a model may keep their state inside the instance."""
        self._instances[index].retired = True

    def is_retired_and_idle(self, index: int) -> bool:
        """The retired instance holds no sequence and runs nothing: it can be closed."""
        instance = self._instances[index]
        return instance.retired and not instance.busy and all(s is None for s in instance.slots)

    # ------------------------------------------------------------------ batches out

    def next_batch(self, index: int, now: int) -> PlannedBatch | None:
        """The next batch for an idle instance, or None (nothing ready, or held back for
        max_queue_delay_microseconds; `next_wakeup` then says until when)."""
        instance = self._instances[index]
        if instance.busy:
            return None
        instance.due_ns = 0
        ready = self._ready(index, now)
        if not ready:
            return None
        if self.settings.strategy == Strategy.DIRECT:
            return self._direct_batch(index, ready, now)
        return self._oldest_batch(index, ready, now)

    def _ready(self, index: int, now: int) -> list[tuple[int, Sequence, Queued]]:
        """(slot, sequence, head request) for each slot of the instance with a runnable
        request; heads that were cancelled or timed out end their sequence here."""
        ready = []
        slots = self._instances[index].slots
        for slot in range(len(slots)):
            while (sequence := slots[slot]) is not None:
                head = self._runnable_head(sequence, now)
                if head is not None:
                    ready.append((slot, sequence, head))
                    break
                if slots[slot] is sequence:
                    break  # nothing queued yet
                # The sequence was aborted and a backlogged one took its slot: look again.
        return ready

    def _runnable_head(self, sequence: Sequence, now: int) -> Queued | None:
        if not sequence.queue:
            return None
        head = sequence.queue[0]
        request = head.request
        if request.cancellation.cancelled:
            self._abort(sequence, 0, cancelled_error(request), Release.CANCELLED)
            return None
        if request.timeout_us and now - head.enqueued_ns > request.timeout_us * 1000:
            error = UnavailableError(
                f"request for sequence {sequence.correlation_id} of model '{self.model_name}' "
                f"timed out in the queue after {request.timeout_us} us"
            )
            self._abort(sequence, 0, error, Release.TIMED_OUT)
            return None
        return head

    def _abort(
        self, sequence: Sequence, position: int, error: TridentError, reason: Release
    ) -> None:
        """Fail the queued request at `position` with `error` and every later one of the
        sequence as cancelled (the sequence's state would be wrong without the missing request),
        and end the sequence: at once, or once the requests before `position` have run."""
        queue = sequence.queue
        dropped = [queue[i].request for i in range(position, len(queue))]
        for _ in dropped:
            queue.pop()
        self._pending -= len(dropped)
        self._failures.append((dropped[0], error))
        for request in dropped[1:]:
            self._failures.append(
                (
                    request,
                    CancelledError(
                        f"request for sequence {sequence.correlation_id} of model "
                        f"'{self.model_name}' was cancelled because an earlier request of the "
                        f"sequence was {reason}"
                    ),
                )
            )
        if sequence.mapped:
            sequence.mapped = False
            del self._active[sequence.correlation_id]
        if sequence.correlation_id not in self._active:
            self._remember(sequence.correlation_id, reason)
        if not queue and not sequence.running:
            self._release(sequence, reason)
        # Otherwise `complete` releases it after its last remaining request.

    def cancel(self, sequence: Sequence, request: InFlightRequest, now: int) -> None:
        """The client cancelled a queued request: answer it (and the rest of its sequence) now
        rather than when it would have run."""
        for position, queued in enumerate(sequence.queue):
            if queued.request is request:
                self._abort(sequence, position, cancelled_error(request), Release.CANCELLED)
                return

    def _direct_batch(
        self, index: int, ready: list[tuple[int, Sequence, Queued]], now: int
    ) -> PlannedBatch | None:
        settings = self.settings
        reason = CloseReason.NO_MORE_REQUESTS
        if settings.max_queue_delay_ns and settings.minimum_slot_utilization:
            oldest = min(head.enqueued_ns for _, _, head in ready)
            utilization = len(ready) / settings.slots_per_instance
            if utilization >= settings.minimum_slot_utilization:
                reason = CloseReason.SLOT_UTILIZATION
            elif now - oldest > settings.max_queue_delay_ns:
                reason = CloseReason.QUEUE_DELAY
            else:
                self._instances[index].due_ns = oldest + settings.max_queue_delay_ns + 1
                return None
        by_slot = {slot: (sequence, head) for slot, sequence, head in ready}
        template = ready[0][2].request
        entries = []
        for slot in range(ready[-1][0] + 1 if settings.batched else 1):
            chosen = by_slot.get(slot)
            if chosen is None:
                entries.append(BatchEntry(self._null_request(template), None, slot))
            else:
                entries.append(self._take(chosen[0], slot))
        return self._start(index, entries, now, reason)

    def _oldest_batch(
        self, index: int, ready: list[tuple[int, Sequence, Queued]], now: int
    ) -> PlannedBatch | None:
        settings = self.settings
        ready.sort(key=lambda item: item[2].enqueued_ns)
        capacity = max(1, settings.max_batch_size)
        if len(ready) >= capacity:
            count, reason = capacity, CloseReason.MAX_BATCH_SIZE
        elif not settings.max_queue_delay_ns:
            count, reason = len(ready), CloseReason.NO_MORE_REQUESTS
        else:
            preferred = [size for size in settings.preferred_batch_sizes if size <= len(ready)]
            oldest = ready[0][2].enqueued_ns
            if preferred:
                count, reason = max(preferred), CloseReason.PREFERRED_SIZE
            elif now - oldest >= settings.max_queue_delay_ns:
                count, reason = len(ready), CloseReason.QUEUE_DELAY
            else:
                self._instances[index].due_ns = oldest + settings.max_queue_delay_ns
                return None
        entries = [self._take(sequence, slot) for slot, sequence, _ in ready[:count]]
        return self._start(index, entries, now, reason)

    def _take(self, sequence: Sequence, slot: int) -> BatchEntry:
        """Pop the sequence's head request and give it its control and state inputs."""
        request = sequence.queue.popleft().request
        self._pending -= 1
        settings = self.settings
        added = tensors.control_tensors(
            settings,
            start=request.sequence_start,
            end=request.sequence_end,
            ready=True,
            correlation_id=sequence.correlation_id,
        )
        if settings.states:
            if request.sequence_start or not sequence.states:
                sequence.states = tensors.initial_state_tensors(settings)
            added.extend(sequence.states[spec.input_name] for spec in settings.states)
        tensors.add_inputs(request, added)
        sequence.running = True
        if request.sequence_end:
            self._release(sequence, Release.ENDED)
        return BatchEntry(request, sequence, slot)

    def _null_request(self, template: InFlightRequest) -> InFlightRequest:
        settings = self.settings
        request = tensors.null_request(template, settings)
        added = tensors.control_tensors(
            settings, start=False, end=False, ready=False, correlation_id=0
        )
        # A dummy state, so the real state of whichever sequence owns the slot stays intact.
        added.extend(tensors.initial_state_tensors(settings).values())
        tensors.add_inputs(request, added)
        return request

    def _start(
        self, index: int, entries: list[BatchEntry], now: int, reason: CloseReason
    ) -> PlannedBatch:
        self._instances[index].busy = True
        return PlannedBatch(index, entries, now, reason)

    def complete(self, batch: PlannedBatch, now: int) -> None:
        """The batch finished (responses delivered, states stored): its instance is free."""
        self._instances[batch.instance].busy = False
        for entry in batch.entries:
            sequence = entry.sequence
            if sequence is not None:
                sequence.running = False
                if not sequence.mapped and not sequence.queue and sequence.instance >= 0:
                    # Cut short (cancelled or timed out) while this request ran: now it is over.
                    self._release(sequence, Release.ENDED)
                # Idle time counts from the last activity, not from the last arrival, so a
                # long execution does not make its sequence look idle.
                sequence.last_active_ns = now

    # ------------------------------------------------------------------ idle sequences

    def reap_idle(self, now: int) -> list[Sequence]:
        """Release sequences idle for longer than max_sequence_idle_microseconds: nothing
        queued, nothing running, and no request since. Returns them."""
        idle_ns = self.settings.max_idle_ns
        reaped = []
        for instance in self._instances:
            for sequence in instance.slots:
                if (
                    sequence is not None
                    and sequence.mapped
                    and not sequence.running
                    and not sequence.queue
                    and now - sequence.last_active_ns >= idle_ns
                ):
                    reaped.append(sequence)
        for sequence in reaped:
            logger.info(
                "sequence %s of model '%s' was idle for more than %d us: released",
                sequence.correlation_id,
                self.model_name,
                idle_ns // 1000,
            )
            self._release(sequence, Release.IDLE)
        return reaped

    def next_wakeup(self) -> int | None:
        """The earliest time (monotonic ns) a held-back batch is due or a sequence turns idle."""
        times = []
        idle_ns = self.settings.max_idle_ns
        for instance in self._instances:
            if instance.due_ns and not instance.busy:
                times.append(instance.due_ns)
            for sequence in instance.slots:
                if (
                    sequence is not None
                    and sequence.mapped
                    and not sequence.running
                    and not sequence.queue
                ):
                    times.append(sequence.last_active_ns + idle_ns)
        return min(times) if times else None

    # ------------------------------------------------------------------ bookkeeping

    def take_failures(self) -> list[tuple[InFlightRequest, TridentError]]:
        """Requests the planner failed since the last call, with their errors."""
        failures, self._failures = self._failures, []
        return failures

    def pending_count(self) -> int:
        """Requests queued and not yet in a batch."""
        return self._pending

    def drain(self) -> list[InFlightRequest]:
        """Remove and return every queued request (the model is unloading)."""
        drained: list[InFlightRequest] = []
        sequences = [s for instance in self._instances for s in instance.slots if s is not None]
        for sequence in [*sequences, *self._backlog]:
            drained.extend(queued.request for queued in sequence.queue)
            sequence.queue.clear()
        self._backlog.clear()
        self._active.clear()
        self._pending = 0
        return drained

    def sequence_of(self, correlation_id: int | str) -> Sequence | None:
        """The live sequence with this correlation ID, if any (for tests and debugging)."""
        return self._active.get(correlation_id)
