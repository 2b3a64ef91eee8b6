"""The direct scheduler: each request runs alone on whichever instance is free.

Requests wait in arrival order when every instance is busy. A request whose client cancelled, or
whose `timeout` expired while it waited, is failed without running.
"""

from __future__ import annotations

import time
from collections import deque

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.stats import ModelStats
from trident.runtime.errors import TridentError, UnavailableError

from .base import Scheduler, cancelled_error
from .delivery import deliver_one, fail, fail_execution
from .worker_pool import WorkerChange, WorkerPool


def batch_size_of(request: InFlightRequest, batched: bool) -> int:
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
        self._pool = WorkerPool(workers)
        #: The pool's idle list, held here for the hot path (the pool changes it in place).
        self._idle = self._pool.idle
        self._queue: deque[InFlightRequest] = deque()
        self._stats = stats
        self._batched = batched
        self._stopping = False

    def pending_count(self) -> int:
        return len(self._queue)

    def submit(self, request: InFlightRequest) -> None:
        if self._stopping:
            raise UnavailableError(f"model '{self._model_name}' is unloading")
        if self._idle:
            worker = self._idle.pop()
            if worker.runs_inline and self._run_now(worker, request):
                return
            self._pool.start(self._run(worker, request))
        else:
            self._queue.append(request)
            self._stats.pending = len(self._queue)

    async def _run(self, worker: InstanceWorker, request: InFlightRequest | None) -> None:
        """One worker's loop: run `request`, then queued ones, until the queue is empty or a
        resize removed the worker."""
        pool = self._pool
        while request is not None:
            await self._execute(worker, request)
            if pool.is_retiring(worker):
                break
            request = self._next_runnable()
        pool.release(worker)

    async def resize(self, workers: list[InstanceWorker]) -> list[InstanceWorker]:
        """Serve with `workers` from now on: new ones start on queued requests at once, removed
        ones finish the request they run. Returns the removed workers once they are idle."""
        return await self._pool.resize(workers, self._serve_added)

    def _serve_added(self, change: WorkerChange) -> None:
        """Added workers are idle now: start the queued requests on them."""
        while self._idle and not self._stopping:
            request = self._next_runnable()
            if request is None:
                return
            self._pool.start(self._run(self._idle.pop(), request))

    def _next_runnable(self) -> InFlightRequest | None:
        """The next queued request that should still run; fails the ones that should not."""
        while self._queue:
            request = self._queue.popleft()
            self._stats.pending = len(self._queue)
            now = time.monotonic_ns()
            if request.cancellation.cancelled:
                fail(self._stats, request, cancelled_error(request), now)
            elif request.timeout_us and (now - request.arrival_ns) > request.timeout_us * 1000:
                error = UnavailableError(
                    f"request for model '{self._model_name}' timed out in the queue after "
                    f"{request.timeout_us} us"
                )
                fail(self._stats, request, error, now)
            else:
                return request
        return None

    def _fail_execution(self, request: InFlightRequest, error: TridentError, start: int) -> None:
        size = batch_size_of(request, self._batched)
        fail_execution(self._stats, (request,), size, error, start, time.monotonic_ns())

    def _run_now(self, worker: InstanceWorker, request: InFlightRequest) -> bool:
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
        deliver_one(self._stats, request, batch_size_of(request, self._batched), outcome, queue_end)
        self._idle.append(worker)
        return True

    async def _execute(self, worker: InstanceWorker, request: InFlightRequest) -> None:
        queue_end = time.monotonic_ns()
        if request.cancellation.cancelled:
            fail(self._stats, request, cancelled_error(request), queue_end)
            return
        try:
            outcome = await worker.execute([request])
        except TridentError as error:
            self._fail_execution(request, error, queue_end)
            return
        deliver_one(self._stats, request, batch_size_of(request, self._batched), outcome, queue_end)

    async def stop(self) -> None:
        self._stopping = True
        now = time.monotonic_ns()
        while self._queue:
            request = self._queue.popleft()
            fail(
                self._stats, request, UnavailableError(f"model '{self._model_name}' unloaded"), now
            )
        self._stats.pending = 0
        await self._pool.wait_running()
