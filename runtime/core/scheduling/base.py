"""What every scheduler implements, and how responses travel back to the frontend.

A scheduler owns one model version's queue and decides which requests run together on which
instance. The direct scheduler runs each request alone on a free instance; the dynamic batcher,
sequence batcher and ensemble scheduler implement the same `Scheduler` interface.

Responses flow through the request's `Responder`: a one-shot future for ordinary models, a queue
for decoupled (streaming) ones. Instances may deliver from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import CancelledError, TridentError, UnsupportedError
from trident.runtime.types import InferenceRequest, InferenceResponse

if TYPE_CHECKING:
    from trident.runtime.core.instances import InstanceWorker


class Responder(ABC):
    """Where a request's responses go. `send` is safe to call from any thread."""

    __slots__ = ("_loop", "_loop_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        self._loop = loop
        self._loop_thread = loop_thread

    def send(self, response: InferenceResponse) -> None:
        if threading.get_ident() == self._loop_thread:
            self._deliver(response)
        else:
            self._loop.call_soon_threadsafe(self._deliver, response)

    def fail(self, error: TridentError) -> None:
        self.send(InferenceResponse(error=error, final=True))

    @abstractmethod
    def _deliver(self, response: InferenceResponse) -> None: ...


class SingleResponder(Responder):
    """One response, awaited by `result()`."""

    __slots__ = ("future",)

    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        super().__init__(loop, loop_thread)
        self.future: asyncio.Future[InferenceResponse] = loop.create_future()

    def _deliver(self, response: InferenceResponse) -> None:
        if not self.future.done():
            self.future.set_result(response)

    async def result(self) -> InferenceResponse:
        return await self.future


class StreamResponder(Responder):
    """Any number of responses; the one with `final=True` ends the stream."""

    __slots__ = ("_queue", "finished")

    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        super().__init__(loop, loop_thread)
        self._queue: asyncio.Queue[InferenceResponse] = asyncio.Queue()
        self.finished = False

    def _deliver(self, response: InferenceResponse) -> None:
        if not self.finished:
            self.finished = response.final
            self._queue.put_nowait(response)

    async def __aiter__(self) -> AsyncIterator[InferenceResponse]:
        while True:
            response = await self._queue.get()
            yield response
            if response.final:
                return


class Scheduler(ABC):
    """Queues a model version's requests and runs them on its instances."""

    @abstractmethod
    def submit(self, request: InFlightRequest) -> None:
        """Queue a validated request whose `responder` is set. Must not block; raise
        UnavailableError when the request is rejected outright (queue full, stopping)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop accepting work, fail what is still queued, wait for running batches to end."""

    def pending_count(self) -> int:
        """Requests accepted but not yet executing (the pending-request gauge)."""
        return 0

    async def resize(self, workers: list[InstanceWorker]) -> list[InstanceWorker]:
        """Serve with `workers` from now on (an instance_group count changed on a reload): added
        workers take queued work at once, removed ones finish what they run. Returns the removed
        workers once they are idle; the caller closes them. A scheduler that cannot raises
        UnsupportedError, and the model manager reloads the model instead."""
        raise UnsupportedError(f"{type(self).__name__} cannot change its instances in place")


def cancelled_error(request: InFlightRequest | InferenceRequest) -> CancelledError:
    return CancelledError(f"request for model '{request.model_name}' was cancelled")
