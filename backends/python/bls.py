"""Business Logic Scripting: a model's requests to other models, run through the server.

The calling instance is found in the model scope (scope.py); its InstanceContext carries the
server's `infer` / `stream_infer` and event loop. A synchronous `execute` runs on the instance's
worker thread and waits on the loop; an `async def execute` runs on the loop and awaits directly.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from trident.backends.base import EXECUTING_INLINE, MustRunOnWorkerThread
from trident.runtime.errors import CancelledError, InternalError, TridentError
from trident.runtime.types import InferenceRequest, InferenceResponse

from .errors import TritonModelException
from .scope import current_scope

if TYPE_CHECKING:
    from trident.backends.base import InstanceContext


def running_instance() -> InstanceContext:
    """The InstanceContext of the model whose code is running; raises when there is none."""
    scope = current_scope()
    context = scope.context if scope is not None else None
    if context is None:
        raise TritonModelException(
            "BLS requests can only be made while a model instance runs your code (initialize, "
            "execute, finalize). From a thread you start yourself, start it with "
            "contextvars.copy_context().run so that it knows its model."
        )
    return context


def calling_instance() -> InstanceContext:
    """The running model's InstanceContext, checked to offer BLS."""
    context = running_instance()
    if context.loop is None or context.infer is None or context.stream_infer is None:
        raise TritonModelException(
            f"BLS is not available to model '{context.model_name}': this server did not give it "
            "a way to run requests"
        )
    return context


def _loop_of(context: InstanceContext) -> asyncio.AbstractEventLoop:
    assert context.loop is not None
    return context.loop


def _refuse_on_server_loop(context: InstanceContext) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is context.loop:
        if EXECUTING_INLINE.get():
            # A sync execute the server ran inline: ask for it to run on its own thread.
            raise MustRunOnWorkerThread
        raise TritonModelException(
            "InferenceRequest.exec() blocks until the response arrives, but this code runs on "
            "the server's event loop (an `async def execute`): use "
            "`await request.async_exec()` instead"
        )


def infer_blocking(request: InferenceRequest) -> InferenceResponse:
    """Run `request` and wait for its response; raises TridentError when it fails."""
    context = calling_instance()
    _refuse_on_server_loop(context)
    assert context.infer is not None
    future = asyncio.run_coroutine_threadsafe(context.infer(request), _loop_of(context))
    return future.result()


async def infer_awaitable(request: InferenceRequest) -> InferenceResponse:
    """Run `request` from a coroutine; works on the server's loop or on a loop of the model's."""
    context = calling_instance()
    assert context.infer is not None
    if asyncio.get_running_loop() is context.loop:
        return await context.infer(request)
    future = asyncio.run_coroutine_threadsafe(context.infer(request), _loop_of(context))
    return await asyncio.wrap_future(future)


async def stream_collect(request: InferenceRequest) -> list[InferenceResponse]:
    """Run `request` on any model and gather all of its responses, the last one final."""
    context = calling_instance()
    assert context.stream_infer is not None
    if asyncio.get_running_loop() is context.loop:
        return await _gather(context.stream_infer(request))
    future = asyncio.run_coroutine_threadsafe(
        _gather(context.stream_infer(request)), _loop_of(context)
    )
    return await asyncio.wrap_future(future)


async def _gather(stream: AsyncIterator[InferenceResponse]) -> list[InferenceResponse]:
    responses = []
    try:
        async for response in stream:
            responses.append(response)
    except TridentError as exc:
        responses.append(InferenceResponse(error=exc, final=True))
    return responses


_END = object()


class LiveStream:
    """Responses of a request to a (decoupled) model as they arrive, for a blocking consumer on
    a thread other than the server loop's."""

    def __init__(self, request: InferenceRequest) -> None:
        context = calling_instance()
        _refuse_on_server_loop(context)
        assert context.stream_infer is not None
        self._request = request
        self._loop = _loop_of(context)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._future = asyncio.run_coroutine_threadsafe(
            self._pump(context.stream_infer(request)), self._loop
        )

    async def _pump(self, stream: AsyncIterator[InferenceResponse]) -> None:
        try:
            async for response in stream:
                self._queue.put(response)
        except asyncio.CancelledError:
            self._queue.put(
                InferenceResponse(error=CancelledError("the BLS request was cancelled"))
            )
            raise
        except TridentError as exc:
            self._queue.put(InferenceResponse(error=exc, final=True))
        except Exception as exc:  # the server failed: tell the model instead of hanging it
            self._queue.put(InferenceResponse(error=InternalError(f"{type(exc).__name__}: {exc}")))
        finally:
            self._queue.put(_END)

    def next(self) -> InferenceResponse | None:
        """The next response, waiting for it; None once the stream has ended."""
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # later calls end too
            return None
        assert isinstance(item, InferenceResponse)
        return item

    def cancel(self) -> None:
        """Cancel the request; the stream then ends."""
        self._loop.call_soon_threadsafe(self._request.cancellation.cancel)
        self._future.cancel()
