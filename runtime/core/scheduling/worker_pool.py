"""The instances one scheduler runs on, and what happens to them between executions.

Every scheduler that executes on instances (direct, dynamic batcher, sequence batcher) keeps the
same bookkeeping here: which workers are idle, the tasks running executions (a stopping scheduler
waits for them), and the workers a reload removed (`resize`), which finish what they run before
the model manager closes them.

Two ways to pick a worker:
- take / release: the direct scheduler and the dynamic batcher take any idle worker
  (`idle.pop()`), run on it, and `release` it afterwards: it goes back to `idle`, or, when a
  resize removed it meanwhile, it retires there and then. A worker that may run several batches
  at once (`InstanceWorker.slots`) is in `idle` once per free slot, and retires once every slot
  it had taken was released.
- planned (`planned=True`): the sequence batcher's planner decides which instance runs next (it
  knows which sequences each holds), so there is no idle list; a removed worker keeps serving the
  sequences it holds and retires when the scheduler says so (`retired`).

The direct scheduler's inline path runs on this object with no await, task or allocation: it
pops a worker from `idle` and appends it back. `idle` is never replaced, only changed in place,
so a scheduler may hold it in an attribute of its own for that path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from trident.runtime.core.instances import InstanceWorker


class WorkerChange(NamedTuple):
    """How a resize changed the workers."""

    removed: list[InstanceWorker]
    added: list[InstanceWorker]


@dataclass(slots=True)
class _Retiring:
    """A worker a resize removed while it ran batches."""

    #: Resolved once it retired.
    done: asyncio.Future[None]
    #: Its slots still running a batch.
    busy: int


def _free_slots(workers: Iterable[InstanceWorker]) -> list[InstanceWorker]:
    """Each worker once per slot, the first slots of all workers last (`pop()` takes from the
    end): requests spread over the workers before any takes a second one."""
    workers = list(workers)
    most = max((worker.slots for worker in workers), default=0)
    return [worker for slot in reversed(range(most)) for worker in workers if slot < worker.slots]


class WorkerPool:
    """A scheduler's workers: idle ones, retiring ones, and the running executions."""

    __slots__ = ("_planned", "_retiring", "_running", "idle", "workers")

    def __init__(self, workers: list[InstanceWorker], planned: bool = False) -> None:
        #: The workers serving now, in order (removed ones leave at once, even while busy).
        self.workers = list(workers)
        #: Free workers, once per free slot; `pop()` takes one. Empty and unused when `planned`.
        self.idle: list[InstanceWorker] = [] if planned else _free_slots(workers)
        self._planned = planned
        #: Workers removed while busy.
        self._retiring: dict[InstanceWorker, _Retiring] = {}
        self._running: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ executions

    def start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run `coroutine` (a worker's executions) as a task that `wait_running` waits for."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def is_retiring(self, worker: InstanceWorker) -> bool:
        """Whether a resize removed `worker`: it should take no more work."""
        return worker in self._retiring

    @property
    def has_retiring(self) -> bool:
        return bool(self._retiring)

    def retiring_workers(self) -> list[InstanceWorker]:
        return list(self._retiring)

    def release(self, worker: InstanceWorker) -> bool:
        """`worker` finished its executions: back to `idle` (True), or retired (False) when a
        resize removed it meanwhile."""
        if self._retiring:
            retiring = self._retiring.get(worker)
            if retiring is not None:
                retiring.busy -= 1
                if retiring.busy <= 0:
                    self.retired(worker)
                return False
        self.idle.append(worker)
        return True

    def retired(self, worker: InstanceWorker) -> None:
        """A removed worker holds nothing any more (planned pools): its resize may return."""
        retiring = self._retiring.pop(worker, None)
        if retiring is not None and not retiring.done.done():
            retiring.done.set_result(None)

    async def wait_running(self) -> None:
        """Wait until every execution started here ended (a stopping scheduler's last step)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # ------------------------------------------------------------------ resize

    def replace(self, workers: list[InstanceWorker]) -> WorkerChange:
        """Serve with `workers` from now on. A removed worker that is idle leaves at once; a
        busy one (every removed one when planned) is retiring until `release` / `retired`.
        Added workers are idle (take / release pools); the caller gives them work."""
        kept, current = set(workers), set(self.workers)
        removed = [worker for worker in self.workers if worker not in kept]
        added = [worker for worker in workers if worker not in current]
        self.workers = list(workers)
        loop = asyncio.get_running_loop()
        for worker in removed:
            busy = 1
            if not self._planned:
                free = self.idle.count(worker)
                if free:
                    self.idle[:] = [idle for idle in self.idle if idle is not worker]
                busy = worker.slots - free
            if busy > 0 and worker not in self._retiring:
                self._retiring[worker] = _Retiring(loop.create_future(), busy)
        if not self._planned:
            self.idle.extend(_free_slots(added))
        return WorkerChange(removed, added)

    async def resize(
        self, workers: list[InstanceWorker], serve_added: Callable[[WorkerChange], None]
    ) -> list[InstanceWorker]:
        """`replace`, then `serve_added(change)` (the scheduler hands queued work to the new
        workers), then wait until the removed workers retired. Returns them; the caller closes
        them."""
        change = self.replace(workers)
        waits = [
            self._retiring[worker].done for worker in change.removed if worker in self._retiring
        ]
        serve_added(change)
        if waits:
            await asyncio.gather(*waits)
        return change.removed
