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

from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.stats import ModelStats
from trident.runtime.errors import TridentError, UnavailableError
from trident.runtime.types import InferenceRequest, InferenceResponse

from .base import Scheduler
from .sequence_config import SequenceSettings, StateSpec
from .sequence_planner import PlannedBatch, Sequence, SequencePlanner
from .sequence_tensors import state_from_output

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
        self._workers = list(workers)
        self._stats = stats
        self._settings = settings
        self._client_outputs = client_outputs
        self._clock = clock
        self._planner = SequencePlanner(model_name, settings, len(workers))
        self._running: set[asyncio.Task[None]] = set()
        #: Instances being removed (by index) -> resolved once they hold no sequence.
        self._retiring: dict[int, asyncio.Future[None]] = {}
        self._retired: set[int] = set()
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

    def submit(self, request: InferenceRequest) -> None:
        if self._stopping:
            raise UnavailableError(f"model '{self._model_name}' is unloading")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        try:
            sequence = self._planner.enqueue(request, self._clock())
        except TridentError as error:
            # Counted like the data plane's validation failures (reason OTHER).
            self._stats.record_failure("OTHER", request.arrival_ns, time.monotonic_ns())
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

    def _on_cancel(self, sequence: Sequence, request: InferenceRequest) -> None:
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
        for index, worker in enumerate(self._workers):
            batch = planner.next_batch(index, now)
            if batch is not None:
                task = asyncio.get_running_loop().create_task(self._run(worker, batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        self._fail_dropped()
        self._stats.pending = planner.pending_count()
        self._settle_retired()
        self._arm_timer(planner.next_wakeup(), now)

    def _settle_retired(self) -> None:
        for index, done in list(self._retiring.items()):
            if self._stopping or self._planner.is_retired_and_idle(index):
                del self._retiring[index]
                if not done.done():
                    done.set_result(None)

    def _fail_dropped(self) -> None:
        for request, error in self._planner.take_failures():
            self._fail(request, error)

    def _fail(self, request: InferenceRequest, error: TridentError) -> None:
        self._stats.record_failure(error.failure_reason, request.arrival_ns, time.monotonic_ns())
        request.responder.fail(error)

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
        try:
            try:
                responses, start, input_end, output_start, end = await worker.execute(
                    batch.requests
                )
            except TridentError as error:
                # The model ran and raised: an execution all the same (Triton counts it).
                stats.record_failed_execution(len(real), queue_end, time.monotonic_ns())
                for entry in real:
                    self._fail(entry.request, error)
                return
            stats.record_execution(len(real), start, input_end, output_start, end)
            stats.record_batch_closed(batch.reason)
            for position, entry in enumerate(batch.entries):
                if entry.sequence is None:
                    continue  # a null request's response is dropped
                request = entry.request
                if responses is None:  # decoupled: the instance sent its responses itself
                    stats.record_success(
                        request.arrival_ns, queue_end, start, input_end, output_start, end
                    )
                    continue
                response = responses[position]
                if response.error is not None:
                    stats.record_failure(response.error.failure_reason, request.arrival_ns, end)
                else:
                    stats.record_success(
                        request.arrival_ns, queue_end, start, input_end, output_start, end
                    )
                request.responder.send(response)
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
        wanted = set(workers)
        live = {
            worker: index
            for index, worker in enumerate(self._workers)
            if index not in self._retired
        }
        removed = [index for worker, index in live.items() if worker not in wanted]
        for worker in workers:
            if worker not in live:
                self._workers.append(worker)
                self._planner.add_instance()
        waits = []
        for index in removed:
            self._planner.retire(index)
            self._retired.add(index)
            waits.append(self._retiring.setdefault(index, self._loop.create_future()))
        self._pump()
        if waits:
            await asyncio.gather(*waits)
        return [self._workers[index] for index in removed]

    # ------------------------------------------------------------------ unload

    async def stop(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = UnavailableError(f"model '{self._model_name}' unloaded")
        for request in self._planner.drain():
            self._fail(request, error)
        self._stats.pending = 0
        self._settle_retired()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
