"""The direct scheduler: each request runs alone on whichever instance is free.

Requests wait in arrival order when every instance is busy. A request whose client cancelled, or
whose `timeout` expired while it waited, is failed without running.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from trident.runtime.core.instances import InstanceWorker, Outcome
from trident.runtime.core.stats import ModelStats
from trident.runtime.errors import TridentError, UnavailableError
from trident.runtime.types import InferenceRequest

from .base import Scheduler, cancelled_error


def batch_size_of(request: InferenceRequest, batched: bool) -> int:
    if not batched or not request.inputs:
        return 1
    shape = request.inputs[0].shape
    return shape[0] if shape else 1


class DirectScheduler(Scheduler):
    def __init__(
        self,
        model_name: str,
        workers: list[InstanceWorker],
        stats: ModelStats,
        batched: bool,
    ) -> None:
        self._model_name = model_name
        self._workers = list(workers)
        self._idle = list(workers)
        #: Workers removed by `resize` while busy -> resolved once they finished their request.
        self._retiring: dict[InstanceWorker, asyncio.Future[None]] = {}
        self._queue: deque[InferenceRequest] = deque()
        self._stats = stats
        self._batched = batched
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False

    def pending_count(self) -> int:
        return len(self._queue)

    def submit(self, request: InferenceRequest) -> None:
        if self._stopping:
            raise UnavailableError(f"model '{self._model_name}' is unloading")
        if self._idle:
            worker = self._idle.pop()
            if worker.runs_inline and self._run_now(worker, request):
                return
            self._start(worker, request)
        else:
            self._queue.append(request)
            self._stats.pending = len(self._queue)

    def _start(self, worker: InstanceWorker, request: InferenceRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._run(worker, request))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, worker: InstanceWorker, request: InferenceRequest | None) -> None:
        while request is not None:
            await self._execute(worker, request)
            if worker in self._retiring:
                break
            request = self._next_runnable()
        retired = self._retiring.pop(worker, None)
        if retired is None:
            self._idle.append(worker)
        elif not retired.done():
            retired.set_result(None)

    async def resize(self, workers: list[InstanceWorker]) -> list[InstanceWorker]:
        """Serve with `workers` from now on: new ones start on queued requests at once, removed
        ones finish the request they run. Returns the removed workers once they are idle."""
        kept = set(workers)
        removed = [worker for worker in self._workers if worker not in kept]
        current = set(self._workers)
        added = [worker for worker in workers if worker not in current]
        self._workers = list(workers)
        waits = []
        for worker in removed:
            if worker in self._idle:
                self._idle.remove(worker)
            else:
                future = self._retiring[worker] = asyncio.get_running_loop().create_future()
                waits.append(future)
        for worker in added:
            request = None if self._stopping else self._next_runnable()
            if request is None:
                self._idle.append(worker)
            else:
                self._start(worker, request)
        if waits:
            await asyncio.gather(*waits)
        return removed

    def _next_runnable(self) -> InferenceRequest | None:
        """The next queued request that should still run; fails the ones that should not."""
        while self._queue:
            request = self._queue.popleft()
            self._stats.pending = len(self._queue)
            now = time.monotonic_ns()
            if request.cancellation.cancelled:
                self._fail(request, cancelled_error(request), now)
            elif request.timeout_us and (now - request.arrival_ns) > request.timeout_us * 1000:
                self._fail(
                    request,
                    UnavailableError(
                        f"request for model '{self._model_name}' timed out in the queue after "
                        f"{request.timeout_us} us"
                    ),
                    now,
                )
            else:
                return request
        return None

    def _fail(self, request: InferenceRequest, error: TridentError, now: int) -> None:
        self._stats.record_failure(error.failure_reason, request.arrival_ns, now)
        request.responder.fail(error)

    def _fail_execution(self, request: InferenceRequest, error: TridentError, start: int) -> None:
        """The model ran and raised: an execution all the same (Triton counts it)."""
        now = time.monotonic_ns()
        self._stats.record_failed_execution(batch_size_of(request, self._batched), start, now)
        self._fail(request, error, now)

    def _run_now(self, worker: InstanceWorker, request: InferenceRequest) -> bool:
        """Run `request` inline, before `submit` returns: no task, no loop turn, and the
        caller finds its response ready. False when the instance asked for its thread after
        all (the worker is then still taken, for the caller to start on it)."""
        queue_end = time.monotonic_ns()
        try:
            outcome = worker.execute_now([request])
        except TridentError as error:
            self._fail_execution(request, error, queue_end)
            self._idle.append(worker)
            return True
        if outcome is None:
            return False
        self._finish(request, outcome, queue_end)
        self._idle.append(worker)
        return True

    async def _execute(self, worker: InstanceWorker, request: InferenceRequest) -> None:
        queue_end = time.monotonic_ns()
        if request.cancellation.cancelled:
            self._fail(request, cancelled_error(request), queue_end)
            return
        try:
            outcome = await worker.execute([request])
        except TridentError as error:
            self._fail_execution(request, error, queue_end)
            return
        self._finish(request, outcome, queue_end)

    def _finish(self, request: InferenceRequest, outcome: Outcome, queue_end: int) -> None:
        """Record the execution and deliver its response."""
        responses, start, input_end, output_start, end = outcome
        stats = self._stats
        stats.record_execution(
            batch_size_of(request, self._batched), start, input_end, output_start, end
        )
        if responses is None:  # decoupled: the instance sent its responses itself
            stats.record_success(request.arrival_ns, queue_end, start, input_end, output_start, end)
            return
        response = responses[0]
        if response.error is not None:
            stats.record_failure(response.error.failure_reason, request.arrival_ns, end)
        else:
            stats.record_success(request.arrival_ns, queue_end, start, input_end, output_start, end)
        request.responder.send(response)

    async def stop(self) -> None:
        self._stopping = True
        now = time.monotonic_ns()
        while self._queue:
            request = self._queue.popleft()
            self._fail(request, UnavailableError(f"model '{self._model_name}' unloaded"), now)
        self._stats.pending = 0
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
