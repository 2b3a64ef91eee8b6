"""The sequence batcher: Triton's `sequence_batching` scheduler for stateful models.

Requests carry a correlation ID (`sequence_id`) and START / END flags. The decisions (slots,
backlog, batch formation, idle release) live in `SequencePlanner`, a plain object; this module
runs them on the event loop: it feeds the planner, executes the batches it forms on the model's
instances, keeps each sequence's implicit state from the responses, delivers the responses and
records statistics. See docs/sequences.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.stats import ModelStats
from trident.runtime.errors import FailureReason, TridentError, UnavailableError
from trident.runtime.types import InferenceResponse

from .base import Scheduler
from .delivery import deliver, fail, fail_execution
from .sequence_config import SequenceSettings, StateSpec
from .sequence_planner import PlannedBatch, Sequence, SequencePlanner
from .sequence_tensors import state_from_output
from .worker_pool import WorkerChange, WorkerPool

if TYPE_CHECKING:
    from trident.runtime.core.loaded_model import LoadedModel

Clock = Callable[[], int]


class StateKeeper:
    """Stands in for a request's responder: takes the implicit-state outputs out of each
    response, stores them on the sequence for its next request, and passes the rest on.

    State outputs reach the client only when the config lists them as outputs (Triton allows
    that for debugging). Works for responses a decoupled model sends from its own threads too.
    """

    __slots__ = ("_client_outputs", "_inner", "_sequence", "_states")

    def __init__(
        self,
        inner: object,
        sequence: Sequence,
        states: tuple[StateSpec, ...],
        client_outputs: frozenset[str],
    ) -> None:
        self._inner = inner
        self._sequence = sequence
        self._states = states
        self._client_outputs = client_outputs

    def send(self, response: InferenceResponse) -> None:
        if response.error is None and response.outputs:
            produced = {tensor.name: tensor for tensor in response.outputs}
            hidden = set()
            for spec in self._states:
                output = produced.get(spec.output_name)
                if output is not None:
                    self._sequence.states[spec.input_name] = state_from_output(spec, output)
                    if spec.output_name not in self._client_outputs:
                        hidden.add(spec.output_name)
            if hidden:
                response.outputs = [t for t in response.outputs if t.name not in hidden]
        self._inner.send(response)  # type: ignore[attr-defined]

    def fail(self, error: TridentError) -> None:
        self._inner.fail(error)  # type: ignore[attr-defined]


class SequenceBatcher(Scheduler):
    """Runs a stateful model's requests sequence by sequence (see the module docstring)."""

    def __init__(
        self,
        model_name: str,
        workers: list[InstanceWorker],
        stats: ModelStats,
        settings: SequenceSettings,
        client_outputs: frozenset[str] = frozenset(),
        clock: Clock = time.monotonic_ns,
    ) -> None:
        self._model_name = model_name
        #: The planner picks the instance that runs next, so the pool keeps no idle list.
        self._pool = WorkerPool(workers, planned=True)
        #: Every instance the planner knows, by its index (a removed one keeps its index).
        self._instances = list(workers)
        self._stats = stats
        self._settings = settings
        self._client_outputs = client_outputs
        self._clock = clock
        self._planner = SequencePlanner(model_name, settings, len(workers))
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    @classmethod
    def for_model(cls, model: LoadedModel, workers: list[InstanceWorker]) -> SequenceBatcher:
        settings = SequenceSettings.from_model_config(model.config, model.model_dir)
        return cls(model.name, workers, model.stats, settings, frozenset(model.output_specs))

    @property
    def planner(self) -> SequencePlanner:
        return self._planner

    def pending_count(self) -> int:
        return self._planner.pending_count()

    # ------------------------------------------------------------------ requests in

    def submit(self, request: InFlightRequest) -> None:
        if self._stopping:
            raise UnavailableError(f"model '{self._model_name}' is unloading")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        try:
            sequence = self._planner.enqueue(request, self._clock())
        except TridentError as error:
            # Counted like the data plane's validation failures (reason OTHER).
            self._stats.record_failure(FailureReason.OTHER, request.arrival_ns, time.monotonic_ns())
            raise error
        if self._settings.states:
            request.responder = StateKeeper(
                request.responder, sequence, self._settings.states, self._client_outputs
            )
        loop = self._loop

        def cancelled() -> None:
            loop.call_soon_threadsafe(self._on_cancel, sequence, request)

        request.cancellation.add_callback(cancelled)
        self._pump()

    def _on_cancel(self, sequence: Sequence, request: InFlightRequest) -> None:
        if not self._stopping:
            self._planner.cancel(sequence, request, self._clock())
            self._pump()

    # ------------------------------------------------------------------ batches out

    def _pump(self) -> None:
        """Release idle sequences, start a batch on every idle instance that has one, fail
        what the planner dropped, and set the timer for the next deadline."""
        if self._stopping:
            return
        planner = self._planner
        now = self._clock()
        planner.reap_idle(now)
        for index, worker in enumerate(self._instances):
            batch = planner.next_batch(index, now)
            if batch is not None:
                self._pool.start(self._run(worker, batch))
        self._fail_dropped()
        self._stats.pending = planner.pending_count()
        self._settle_retired()
        self._arm_timer(planner.next_wakeup(), now)

    def _settle_retired(self) -> None:
        """Removed instances that hold no sequence any more are retired."""
        pool = self._pool
        if not pool.has_retiring:
            return
        for worker in pool.retiring_workers():
            if self._stopping or self._planner.is_retired_and_idle(self._instances.index(worker)):
                pool.retired(worker)

    def _fail_dropped(self) -> None:
        for request, error in self._planner.take_failures():
            fail(self._stats, request, error, time.monotonic_ns())

    def _arm_timer(self, due: int | None, now: int) -> None:
        if due is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_due <= due:
                return  # it fires first; the pump then sets the timer for what is left
            self._timer.cancel()
        assert self._loop is not None
        self._timer_due = due
        self._timer = self._loop.call_later(max(0, due - now) / 1e9, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    async def _run(self, worker: InstanceWorker, batch: PlannedBatch) -> None:
        real = batch.real
        stats = self._stats
        queue_end = time.monotonic_ns()
        requests = [entry.request for entry in real]
        try:
            try:
                outcome = await worker.execute(batch.requests)
            except TridentError as error:
                now = time.monotonic_ns()
                fail_execution(stats, requests, len(real), error, queue_end, now)
                return
            stats.record_batch_closed(batch.reason)
            responses = outcome.responses
            if responses is not None and len(real) < len(batch.entries):
                # Null requests (direct strategy) hold a slot only: their responses are dropped.
                kept = [r for r, e in zip(responses, batch.entries) if e.sequence is not None]
                outcome = outcome._replace(responses=kept)
            deliver(stats, requests, len(real), outcome, queue_end)
        finally:
            self._planner.complete(batch, self._clock())
            self._pump()

    # ------------------------------------------------------------------ instances

    async def resize(self, workers: list[InstanceWorker]) -> list[InstanceWorker]:
        """Serve with `workers` from now on. New instances take backlogged sequences at once;
        a removed instance keeps the sequences it holds until they end (or are released as
        idle), because a model may keep their state inside the instance. Returns the removed
        workers once they hold no sequence."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return await self._pool.resize(workers, self._serve_change)

    def _serve_change(self, change: WorkerChange) -> None:
        for worker in change.added:
            self._instances.append(worker)
            self._planner.add_instance()
        for worker in change.removed:
            self._planner.retire(self._instances.index(worker))
        self._pump()

    # ------------------------------------------------------------------ unload

    async def stop(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = UnavailableError(f"model '{self._model_name}' unloaded")
        now = time.monotonic_ns()
        for request in self._planner.drain():
            fail(self._stats, request, error, now)
        self._stats.pending = 0
        self._settle_retired()
        await self._pool.wait_running()
