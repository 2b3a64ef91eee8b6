"""Instance-group members and the worker each one runs on.

A synchronous instance (ONNX Runtime, torch, a sync Python `execute`) gets one dedicated thread,
so N instances give N concurrent executions while the event loop keeps serving. An instance whose
`execute` is a coroutine runs on the event loop itself.

Inline execution: handing a batch to a thread and back (a thread wake-up, the GIL changing hands
twice, a loop wake-up) costs far more than a small model's own work, and on a busy machine each
GIL hand-off can wait out the interpreter's switch interval (figures in perf/README.md,
"Baselines"). A synchronous instance that allows it (`ModelInstance.may_run_inline`) and
whose executions prove short (a running average of the thread's CPU time under the instance's
`inline_threshold_ns`, or 1 ms by default) then runs directly on the event loop, if it is its
model's only instance (several instances are there to run in parallel, which the loop cannot).
CPU time, not wall time: time spent waiting for the GIL is exactly the cost inline execution
removes. One long execution sends the instance back to its thread for good, so a model that is
sometimes slow never holds the loop twice. So does an instance that hands a batch over to its
thread (MustRunOnWorkerThread: a Python model waiting for a BLS call, an isolated model's batch
still running): the core then calls `execute` on the thread with the same requests, and the
instance finishes that batch there; no batch is ever executed twice. An instance may also
withdraw `may_run_inline` (a Python model that called the server), which keeps it on its thread.
"""

from __future__ import annotations

import asyncio
import gc
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from trident.backends.base import (
    ComputeTiming,
    ModelInstance,
    MustRunOnWorkerThread,
)
from trident.runtime.errors import ModelExecutionError, TridentError
from trident.runtime.observability.tracing import record_compute
from trident.runtime.types import InferenceResponse

from .in_flight import InFlightRequest


class Outcome(NamedTuple):
    """What one execution produced, and when its stages happened (monotonic ns)."""

    #: One response per request, in order; None for a decoupled model (it sent them itself).
    responses: list[InferenceResponse] | None
    start_ns: int
    #: When the instance had its inputs ready (`start_ns` if it did not say).
    input_end_ns: int
    #: When the instance began producing outputs (`end_ns` if it did not say).
    output_start_ns: int
    end_ns: int


#: Builds an Outcome without NamedTuple's Python-level `__new__`: once per execution, on the
#: hot path, in less than half the time.
_new_outcome = tuple.__new__

#: Executions averaging less than this run inline (0 turns inline execution off).
DEFAULT_INLINE_THRESHOLD_NS = 1_000_000
#: Executions observed on the thread before the average is trusted.
_WARMUP_EXECUTIONS = 16
#: An inline execution using more CPU than this many thresholds ends inline execution for the
#: worker, and so does one lasting this many thresholds of wall time (a model that blocks). The
#: wall-time limit is looser: on a busy machine the loop's thread is preempted for tens of
#: milliseconds now and then, which says nothing about the model.
_INLINE_LIMIT_FACTOR = 10
_INLINE_WALL_LIMIT_FACTOR = 50
#: Executions on the thread may average this many thresholds of wall time and still go inline.
_WALL_FACTOR = 5


class InstanceWorker:
    """Runs batches on one model instance, one at a time (or `slots` at a time)."""

    __slots__ = (
        "_average_ns",
        "_average_wall_ns",
        "_executor",
        "_inline",
        "_inline_allowed",
        "_inline_threshold_ns",
        "_inline_vetoed",
        "_loop",
        "_observed",
        "_thread_ns",
        "_thread_wall_ns",
        "instance",
        "name",
        "slots",
    )

    def __init__(
        self,
        name: str,
        instance: ModelInstance,
        loop: asyncio.AbstractEventLoop,
        inline_threshold_ns: int = DEFAULT_INLINE_THRESHOLD_NS,
    ) -> None:
        self.name = name
        self.instance = instance
        #: Batches this worker may run at once (ModelInstance.concurrent_executions).
        self.slots = max(instance.concurrent_executions, 1) if instance.is_async else 1
        self._loop = loop
        self._executor = (
            None
            if instance.is_async
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"trident-{name}")
        )
        self._inline_allowed = (
            inline_threshold_ns > 0 and not instance.is_async and instance.may_run_inline
        )
        if instance.inline_threshold_ns is not None and inline_threshold_ns > 0:
            inline_threshold_ns = instance.inline_threshold_ns
        self._inline_threshold_ns = inline_threshold_ns
        self._inline = False
        self._inline_vetoed = False
        self._average_ns = 0.0
        self._average_wall_ns = 0.0
        self._observed = 0
        self._thread_ns = 0
        self._thread_wall_ns = 0

    @property
    def runs_inline(self) -> bool:
        return self._inline

    def allow_inline(self, allowed: bool) -> None:
        """The model manager allows inline execution only to a model's only instance."""
        self._inline_vetoed = not allowed
        if not allowed:
            self._inline = False

    def execute_now(self, requests: list[InFlightRequest]) -> Outcome | None:
        """Run one batch inline, now (only while `runs_inline`). None when the instance asked
        to run on its thread instead: then call `execute`."""
        timing = ComputeTiming()
        start = time.monotonic_ns()
        try:
            responses = self._execute_inline(requests, timing)
        except TridentError:
            raise
        except BaseException as exc:  # a model's own failure (SystemExit too): keep serving
            raise self._failure(exc) from exc
        if responses is _HANDED_OVER:
            return None
        return self._outcome(requests, responses, timing, start)  # type: ignore[arg-type]

    async def execute(self, requests: list[InFlightRequest]) -> Outcome:
        """Run one batch and say what it produced and when; raises TridentError when the whole
        batch failed."""
        timing = ComputeTiming()
        start = time.monotonic_ns()
        try:
            if self._executor is None:
                responses = await self.instance.execute(requests, timing)  # type: ignore[misc]
            elif self._inline:
                responses = self._execute_inline(requests, timing)
                if responses is _HANDED_OVER:  # the instance finishes it there (same timing)
                    responses = await self._execute_on_thread(requests, timing)
            else:
                responses = await self._execute_on_thread(requests, timing)
        except (TridentError, asyncio.CancelledError):
            raise
        except BaseException as exc:  # a model's own failure (SystemExit too): keep serving
            raise self._failure(exc) from exc
        return self._outcome(requests, responses, timing, start)  # type: ignore[arg-type]

    def _failure(self, exc: BaseException) -> ModelExecutionError:
        # SystemExit, KeyboardInterrupt or GeneratorExit from a model's code would otherwise
        # travel up the event loop and end the server: it is that model's error, no more.
        return ModelExecutionError(f"instance '{self.name}': {type(exc).__name__}: {exc}")

    def _outcome(
        self,
        requests: list[InFlightRequest],
        responses: list[InferenceResponse] | None,
        timing: ComputeTiming,
        start: int,
    ) -> Outcome:
        end = time.monotonic_ns()
        input_end = timing.input_end_ns or start
        output_start = timing.output_start_ns or end
        if responses is not None and len(responses) != len(requests):
            raise ModelExecutionError(
                f"instance '{self.name}' returned {len(responses)} responses for "
                f"{len(requests)} requests"
            )
        outcome: Outcome = _new_outcome(Outcome, (responses, start, input_end, output_start, end))
        for request in requests:
            if request.trace is not None:  # traced requests get the execution's stages
                record_compute(requests, responses, start, input_end, output_start, end)
                break
        return outcome

    async def _execute_on_thread(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[InferenceResponse] | None:
        if not self._inline_allowed:
            return await self._loop.run_in_executor(
                self._executor,
                self.instance.execute,  # type: ignore[arg-type]  # sync: not a coroutine here
                requests,
                timing,
            )
        try:
            return await self._loop.run_in_executor(
                self._executor, self._timed_execute, requests, timing
            )
        finally:
            self._observe(self._thread_ns, self._thread_wall_ns)

    def _timed_execute(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[InferenceResponse] | None:
        """On the worker thread: the execution's own CPU time, without the hand-off and without
        waiting for the GIL, is what counts."""
        start = time.thread_time_ns()
        wall_start = time.monotonic_ns()
        collecting_start = _collection.ns
        try:
            return self.instance.execute(requests, timing)  # type: ignore[return-value]
        finally:
            # Read by execute() once the await returns (the future orders the two threads).
            collecting = _collection.ns - collecting_start
            self._thread_ns = time.thread_time_ns() - start - collecting
            self._thread_wall_ns = time.monotonic_ns() - wall_start - collecting

    def _execute_inline(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[InferenceResponse] | object | None:
        instance = self.instance
        start = time.monotonic_ns()
        cpu_start = time.thread_time_ns()
        collecting_start = _collection.ns
        try:
            return (instance.execute_inline or instance.execute)(requests, timing)
        except MustRunOnWorkerThread:
            self._inline = self._inline_allowed = False
            return _HANDED_OVER
        finally:
            if self._inline:
                # A garbage collection that ran meanwhile is the process's pause, not the
                # model's time: it would have paused the loop wherever the model ran.
                collecting = _collection.ns - collecting_start
                self._observe(
                    time.thread_time_ns() - cpu_start - collecting,
                    time.monotonic_ns() - start - collecting,
                )

    def _observe(self, cpu_ns: int, wall_ns: int) -> None:
        """Switch between inline and thread execution from the durations seen. A model that
        blocks without using the CPU (sleeps, waits on I/O) is kept off the loop by its wall
        time, allowed up to `_WALL_FACTOR` thresholds for the GIL waits it includes."""
        threshold = self._inline_threshold_ns
        if self._inline:
            if (
                cpu_ns > threshold * _INLINE_LIMIT_FACTOR
                or wall_ns > threshold * _INLINE_WALL_LIMIT_FACTOR
            ):
                self._inline = self._inline_allowed = False
            return
        self._observed += 1
        if self._observed == 1:
            self._average_ns = float(cpu_ns)
            self._average_wall_ns = float(wall_ns)
        else:
            self._average_ns += (cpu_ns - self._average_ns) * 0.125
            self._average_wall_ns += (wall_ns - self._average_wall_ns) * 0.125
        if (
            not self._inline_vetoed
            and self.instance.may_run_inline  # withdrawn by the instance meanwhile?
            and self._observed >= _WARMUP_EXECUTIONS
            and self._average_ns < threshold
            and self._average_wall_ns < threshold * _WALL_FACTOR
        ):
            self._inline = True

    def close(self) -> None:
        """Finalize the instance on its own thread (models expect that), then stop the thread."""
        if self._executor is not None:
            self._executor.submit(self.instance.close).result()
            self._executor.shutdown(wait=True)
        else:
            self.instance.close()


class _CollectionClock:
    """Wall time spent in Python's garbage collector, process-wide, in ns (gc.callbacks)."""

    __slots__ = ("_started", "ns")

    def __init__(self) -> None:
        self.ns = 0
        self._started = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.monotonic_ns()
        else:
            self.ns += time.monotonic_ns() - self._started


_collection = _CollectionClock()
gc.callbacks.append(_collection)

#: Marks a batch an inline execution handed over to the instance's thread to finish
#: (MustRunOnWorkerThread).
_HANDED_OVER = object()
