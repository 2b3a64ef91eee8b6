"""The dynamic batcher: Triton's `dynamic_batching`, as config.pbtxt configures it.

Two parts:

- `DynamicBatcher` is a plain object that owns the queue and decides which queued requests run
  together and when. It never reads a clock or starts a thread: callers pass `now` and ask
  `poll()` for the next batch whenever an instance is free; when `poll()` answers "not yet" it
  says until when (`wakeup_ns`). Unit tests drive it with made-up times.
- `DynamicBatchScheduler` is the thin asyncio driver: it feeds submitted requests to the
  batcher, runs each batch on a free instance (one batch per instance at a time, the next one
  forming while instances are busy; the instances are a `WorkerPool`, worker_pool.py), wakes
  the batcher at its deadline with a precise timer (precise_timer.py), delivers responses and
  records statistics (delivery.py), in queue order when `preserve_ordering` is set
  (ordered_delivery.py).

A batch is counted in inferences (the sum of its requests' batch dimensions) and never exceeds
`max_batch_size`. Why each batch closed is counted per model (`ModelStats.batch_close_reasons`,
exposed as `trident_batch_close_total` and in the statistics JSON) and logged at debug level on
the `trident.batching` logger. See docs/batching.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import ModelLoadError, TridentError, UnavailableError
from trident.runtime.protocol import model_config_pb2 as mc

from .base import Scheduler, cancelled_error
from .close_reason import DYNAMIC_CLOSE_REASONS, CloseReason
from .delivery import deliver, fail, fail_execution
from .direct import batch_size_of
from .ordered_delivery import OrderedDelivery
from .precise_timer import TimerFactory, WakeupTimer, create_timer
from .queue_policy import PriorityQueue, QueuedRequest, QueuePolicy, level_policies
from .worker_pool import WorkerChange, WorkerPool

if TYPE_CHECKING:
    from trident.runtime.core.instances import InstanceWorker
    from trident.runtime.core.stats import ModelStats

logger = logging.getLogger("trident.batching")


@dataclass(frozen=True, slots=True)
class BatcherSettings:
    """The `dynamic_batching` fields the batcher uses, checked."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    default_policy: QueuePolicy = field(default_factory=QueuePolicy)
    level_policies: dict[int, QueuePolicy] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> BatcherSettings:
        """Read and check `config.dynamic_batching`; ModelLoadError says what to fix."""
        batching = config.dynamic_batching
        where = f"model '{config.name}'"
        for size in batching.preferred_batch_size:
            if not 1 <= size <= config.max_batch_size:
                raise ModelLoadError(
                    f"{where}: dynamic_batching preferred_batch_size {size} must be between 1 "
                    f"and max_batch_size ({config.max_batch_size})"
                )
        if batching.priority_levels and not (
            1 <= batching.default_priority_level <= batching.priority_levels
        ):
            raise ModelLoadError(
                f"{where}: dynamic_batching default_priority_level must be between 1 and "
                f"priority_levels ({batching.priority_levels}), got "
                f"{batching.default_priority_level}"
            )
        return cls(
            max_batch_size=config.max_batch_size,
            preferred_batch_sizes=tuple(sorted(set(batching.preferred_batch_size))),
            max_queue_delay_us=batching.max_queue_delay_microseconds,
            preserve_ordering=batching.preserve_ordering,
            priority_levels=batching.priority_levels,
            default_priority_level=batching.default_priority_level,
            default_policy=QueuePolicy.from_proto(batching.default_queue_policy),
            level_policies=level_policies(batching, config.name),
        )


@dataclass(slots=True)
class Batch:
    """Requests that run together in one `execute` call."""

    entries: list[QueuedRequest]
    #: Inferences: the sum of the requests' batch dimensions.
    size: int
    #: Why it closed.
    reason: CloseReason
    #: How long its oldest request waited in the queue.
    queue_delay_ns: int

    @property
    def requests(self) -> list[InFlightRequest]:
        return [entry.request for entry in self.entries]


class DynamicBatcher:
    """Queues requests and forms batches the way Triton's dynamic batcher does.

    Call `poll(now)` whenever an instance is free. It returns the next batch, or None when the
    batch should wait for more requests; `wakeup_ns()` then says when to poll again. A batch
    closes (in this order of precedence):

    1. at the largest preferred size the queued requests reach, unless the oldest waited past
       the delay (no preferred sizes configured means max_batch_size, as Triton normalizes it);
    2. when the next request would not fit in max_batch_size;
    3. when the oldest request waited max_queue_delay (or at once when the delay is 0), with
       whatever is queued;
    4. when a single request already exceeds the largest preferred size.
    """

    def __init__(self, model_name: str, settings: BatcherSettings) -> None:
        if settings.max_batch_size < 1:
            raise ValueError("the dynamic batcher needs max_batch_size >= 1")
        self.settings = settings
        self._max_batch = settings.max_batch_size
        self._preferred = frozenset(settings.preferred_batch_sizes or (settings.max_batch_size,))
        self._max_preferred = max(self._preferred)
        #: Whether the config names preferred sizes (else max_batch_size is the only one).
        self._own_preferred = bool(settings.preferred_batch_sizes)
        self._delay_ns = settings.max_queue_delay_us * 1000
        self._queue = PriorityQueue(
            model_name,
            settings.priority_levels,
            settings.default_priority_level,
            settings.default_policy,
            settings.level_policies,
        )
        self._rejected: list[QueuedRequest] = []
        #: Set while the queue waits for more requests (an instance is free): when to close
        #: anyway, and the queued size that may close it earlier.
        self._waiting = False
        self._batch_deadline_ns = 0
        self._wake_size = 0
        #: How long before a delay ends the caller's timer fires (its measured wake-up
        #: latency, set by the driver; 0 in tests): a delay that ends within this much counts
        #: as over, so a lone request waits max_queue_delay in all, wake-up included.
        self.timer_lead_ns = 0

    def __len__(self) -> int:
        """Requests queued (the pending-request gauge)."""
        return len(self._queue)

    @property
    def has_timeouts(self) -> bool:
        return self._queue.has_timeouts

    def add(self, request: InFlightRequest, since_ns: int, size: int) -> QueuedRequest:
        """Queue a request of `size` inferences, waiting since `since_ns` (its queue delay and
        timeout count from then). UnavailableError when its level is full."""
        return self._queue.push(request, size, since_ns)

    def needs_poll(self, entry: QueuedRequest) -> bool:
        """After `add(entry)` with an instance free: could `poll()` now do something the
        pending deadline would not? (Keeps the per-request cost flat while a batch fills.)"""
        if not self._waiting:
            return True
        if self._queue.queued_size >= self._wake_size:
            return True
        return bool(entry.expires_ns) and entry.expires_ns < self._batch_deadline_ns

    def remove(self, entry: QueuedRequest) -> bool:
        """Take a request out of the queue (its client cancelled). False if it left already."""
        return self._queue.remove(entry)

    def take_rejected(self) -> list[QueuedRequest]:
        """Requests whose timeout expired under a REJECT policy since the last call."""
        rejected, self._rejected = self._rejected, []
        return rejected

    def expire(self, now_ns: int) -> None:
        """Apply timeouts now (also while every instance is busy), so REJECT fails promptly."""
        if self._queue.has_timeouts:
            self._rejected.extend(self._queue.expire(now_ns))

    def drain(self) -> list[QueuedRequest]:
        self._waiting = False
        return self._queue.drain()

    def wakeup_ns(self, instance_free: bool) -> int:
        """When to call `poll()` (instance free) or `expire()` next; 0 = nothing to wait for."""
        deadline = (
            self._batch_deadline_ns - self.timer_lead_ns if instance_free and self._waiting else 0
        )
        expiry = self._queue.next_expiry_ns()
        if expiry and (not deadline or expiry < deadline):
            return expiry
        return deadline

    def poll(self, now_ns: int, instance_waited: bool = False) -> Batch | None:
        """The batch to run now on a free instance, or None (then see `wakeup_ns`).
        `instance_waited`: the caller's instance just finished a batch, so what is queued may
        have been waiting for it (close reason `instance_free`)."""
        queue = self._queue
        if queue.has_timeouts:
            self._rejected.extend(queue.expire(now_ns))
        if not len(queue):
            self._waiting = False
            return None
        max_batch, max_preferred, preferred = self._max_batch, self._max_preferred, self._preferred
        size = count = best = best_count = 0
        oldest = now_ns
        full = False
        for entry in queue:
            entry_size = entry.size
            if count:
                if not best and size + entry_size > max_preferred:
                    best, best_count = size, count  # cannot grow closer to a preferred size
                if size + entry_size > max_batch:
                    full = True
                    break
            size += entry_size
            count += 1
            if entry.enqueued_ns < oldest:
                oldest = entry.enqueued_ns
            if size in preferred:
                best, best_count = size, count
            if size >= max_batch:
                full = True
                break
        delay = self._delay_ns
        waited = now_ns - oldest
        delay_exceeded = delay and waited + self.timer_lead_ns >= delay
        if best and not delay_exceeded:
            reason = (
                CloseReason.PREFERRED_SIZE
                if self._own_preferred and best < max_batch
                else CloseReason.MAX_BATCH_SIZE
            )
            return self._take(best_count, reason, now_ns)
        if full:
            return self._take(count, CloseReason.MAX_BATCH_SIZE, now_ns)
        if delay_exceeded or not delay:
            if instance_waited:
                reason = CloseReason.INSTANCE_FREE
            elif delay:
                reason = CloseReason.QUEUE_DELAY
            else:
                reason = CloseReason.NO_MORE_REQUESTS
            return self._take(count, reason, now_ns)
        if size >= max_preferred:  # one request larger than every preferred size
            return self._take(count, CloseReason.PREFERRED_SIZE, now_ns)
        self._waiting = True
        self._batch_deadline_ns = oldest + delay
        self._wake_size = min((p for p in preferred if p > size), default=max_preferred)
        return None

    def _take(self, count: int, reason: CloseReason, now_ns: int) -> Batch:
        self._waiting = False
        entries = self._queue.pop(count)
        oldest = min(entry.enqueued_ns for entry in entries)
        size = sum(entry.size for entry in entries)
        return Batch(entries, size, reason, now_ns - oldest)


class DynamicBatchScheduler(Scheduler):
    """Runs a `DynamicBatcher`'s batches on the model's instances (asyncio driver)."""

    def __init__(
        self,
        model_name: str,
        model_version: int,
        workers: list[InstanceWorker],
        stats: ModelStats,
        settings: BatcherSettings,
        clock: Callable[[], int] = time.monotonic_ns,
        timer_factory: TimerFactory = create_timer,
    ) -> None:
        self._model_name = model_name
        self._model_version = model_version
        self._batcher = DynamicBatcher(model_name, settings)
        self._pool = WorkerPool(workers)
        #: The pool's idle list, held here for the hot path (the pool changes it in place).
        self._idle = self._pool.idle
        self._stats = stats
        self._clock = clock
        self._timer_factory = timer_factory
        self._ordering = OrderedDelivery() if settings.preserve_ordering else None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._timer: WakeupTimer | None = None
        #: The deadline the timer was last set to; the timer's lateness is learnt from it.
        self._timer_target_ns = 0
        #: The most the batcher may end a delay early to make up for the timer's lateness.
        self._max_timer_lead_ns = settings.max_queue_delay_us * 1000 // 4
        for reason in DYNAMIC_CLOSE_REASONS:  # every series exists from load on, like Triton's
            stats.batch_close_reasons.setdefault(reason, 0)

    def pending_count(self) -> int:
        return len(self._batcher)

    # ---------------------------------------------------------------- queueing

    def submit(self, request: InFlightRequest) -> None:
        if self._stopping:
            raise UnavailableError(f"model '{self._model_name}' is unloading")
        if self._loop is None:
            self._bind_loop()
        now = self._clock()
        batcher = self._batcher
        # The delay and the timeout count from the request's arrival, like its queue time in
        # the statistics, so max_queue_delay bounds the queue time users see.
        since = min(request.arrival_ns, now)
        try:
            entry = batcher.add(request, since, batch_size_of(request, True))
        except UnavailableError as error:
            self._stats.record_failure(error.failure_reason, request.arrival_ns, now)
            raise
        request.cancellation.add_callback(lambda: self._cancel_threadsafe(entry))
        self._stats.pending = len(batcher)
        if self._idle:
            if batcher.needs_poll(entry):
                self._pump(now, instance_waited=False)
        elif entry.expires_ns and self._timer is not None:
            # Every instance is busy: still wake up when this request expires.
            armed = self._timer.deadline_ns
            if not armed or entry.expires_ns < armed:
                self._set_timer(entry.expires_ns)

    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # With no delay and no timeouts nothing ever waits: no timer at all.
        if self._batcher.settings.max_queue_delay_us or self._batcher.has_timeouts:
            self._timer = self._timer_factory(self._loop, self._on_timer)

    def _cancel_threadsafe(self, entry: QueuedRequest) -> None:
        if threading.get_ident() == self._loop_thread:
            self._cancel(entry)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel, entry)

    def _cancel(self, entry: QueuedRequest) -> None:
        """A client cancelled: leave the queue now, fail as CANCELED."""
        if self._batcher.remove(entry):
            self._stats.pending = len(self._batcher)
            fail(self._stats, entry.request, cancelled_error(entry.request), self._clock())

    def _on_timer(self) -> None:
        if self._stopping:
            return
        now = self._clock()
        target, self._timer_target_ns = self._timer_target_ns, 0
        if target and now > target and self._max_timer_lead_ns:
            # Learn how late the timer lands (wake-up latency), to set it that much earlier.
            lead = (self._batcher.timer_lead_ns * 7 + now - target) // 8
            self._batcher.timer_lead_ns = min(lead, self._max_timer_lead_ns)
        if self._idle:
            self._pump(now, instance_waited=False)
        else:
            self._batcher.expire(now)
            self._fail_rejected(now)
            self._arm()

    def _arm(self) -> None:
        """Point the timer at the batcher's next deadline."""
        if self._timer is not None:
            self._set_timer(self._batcher.wakeup_ns(instance_free=bool(self._idle)))

    def _set_timer(self, deadline_ns: int) -> None:
        self._timer_target_ns = deadline_ns
        self._timer.set(deadline_ns)  # type: ignore[union-attr]

    # ---------------------------------------------------------------- batches

    def _pump(self, now: int, instance_waited: bool) -> None:
        """Start batches on idle instances while the batcher has some ready. An instance that
        runs inline runs its batch now, before this returns (no task, no loop turn)."""
        batcher = self._batcher
        while self._idle:
            batch = batcher.poll(now, instance_waited)
            if batch is None:
                break
            self._closed(batch)
            worker = self._idle.pop()
            if worker.runs_inline:
                if not self._run_now(worker, batch, now):
                    continue  # the worker went on on its thread
                self._idle.append(worker)
                now = self._clock()
                instance_waited = True  # what is still queued waited for this batch
                continue
            self._pool.start(self._run(worker, batch, now))
        self._fail_rejected(now)
        self._arm()

    def _closed(self, batch: Batch) -> None:
        stats = self._stats
        stats.pending = len(self._batcher)
        stats.record_batch_closed(batch.reason)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "batch closed: model=%s version=%d size=%d requests=%d reason=%s queue_delay_us=%d",
                self._model_name,
                self._model_version,
                batch.size,
                len(batch.entries),
                batch.reason,
                batch.queue_delay_ns // 1000,
            )

    async def _run(
        self,
        worker: InstanceWorker,
        batch: Batch | None,
        now: int,
        prepared: tuple[list[InFlightRequest], int] | None = None,
    ) -> None:
        """One instance's loop: run a batch (or `prepared` requests), then the next one the
        batcher has ready."""
        while batch is not None or prepared is not None:
            if prepared is not None:
                await self._execute_requests(worker, *prepared, now)
                prepared = None
            else:
                await self._execute(worker, batch, now)  # type: ignore[arg-type]
            if self._stopping or self._pool.is_retiring(worker):
                break
            now = self._clock()
            batch = self._batcher.poll(now, instance_waited=True)
            self._fail_rejected(now)
            if batch is not None:
                self._closed(batch)
        if self._pool.release(worker) and not self._stopping:
            self._arm()

    def _run_now(self, worker: InstanceWorker, batch: Batch, queue_end: int) -> bool:
        """Run `batch` inline, now. False when the instance asked for its thread after all: the
        batch then runs there, and the worker goes on serving from there."""
        requests, size = self._runnable(batch, queue_end)
        if not requests:
            return True
        try:
            outcome = worker.execute_now(requests)
        except TridentError as error:
            fail_execution(self._stats, requests, size, error, queue_end, self._clock())
            return True
        if outcome is None:
            self._pool.start(self._run(worker, None, queue_end, (requests, size)))
            return False
        deliver(self._stats, requests, size, outcome, queue_end)
        return True

    async def _execute(self, worker: InstanceWorker, batch: Batch, queue_end: int) -> None:
        requests, size = self._runnable(batch, queue_end)
        if requests:
            await self._execute_requests(worker, requests, size, queue_end)

    async def _execute_requests(
        self, worker: InstanceWorker, requests: list[InFlightRequest], size: int, queue_end: int
    ) -> None:
        try:
            outcome = await worker.execute(requests)
        except TridentError as error:
            fail_execution(self._stats, requests, size, error, queue_end, self._clock())
            return
        deliver(self._stats, requests, size, outcome, queue_end)

    def _runnable(self, batch: Batch, queue_end: int) -> tuple[list[InFlightRequest], int]:
        """The batch's requests that should still run, and their inference count; fails the
        ones cancelled meanwhile."""
        requests = []
        size = 0
        for entry in batch.entries:
            request = entry.request
            if request.cancellation.cancelled:  # cancelled from another thread just now
                fail(self._stats, request, cancelled_error(request), queue_end)
                continue
            if self._ordering is not None:
                self._ordering.wrap(request)
            requests.append(request)
            size += entry.size
        return requests, size

    # ---------------------------------------------------------------- failures, stop

    def _fail_rejected(self, now: int) -> None:
        rejected = self._batcher.take_rejected()
        if not rejected:
            return
        self._stats.pending = len(self._batcher)
        for entry in rejected:
            error = UnavailableError(
                f"request for model '{self._model_name}' timed out after waiting "
                f"{entry.timeout_us} us in the queue (timeout_action REJECT)"
            )
            fail(self._stats, entry.request, error, now)

    async def resize(self, workers: list[InstanceWorker]) -> list[InstanceWorker]:
        """Serve with `workers` from now on: added ones take queued batches at once, removed
        ones finish the batch they run. Returns the removed workers once they are idle."""
        return await self._pool.resize(workers, self._serve_added)

    def _serve_added(self, change: WorkerChange) -> None:
        if change.added and not self._stopping:
            if self._loop is None:
                self._bind_loop()
            self._pump(self._clock(), instance_waited=False)

    async def stop(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.close()
        now = self._clock()
        error = UnavailableError(f"model '{self._model_name}' unloaded")
        for entry in self._batcher.drain():
            fail(self._stats, entry.request, error, now)
        self._stats.pending = 0
        await self._pool.wait_running()
