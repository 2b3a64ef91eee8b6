"""Business Logic Scripting: a model's requests to other models, run through the server.

The calling instance is found in the model scope (scope.py); its InstanceContext carries the
server's `infer` / `stream_infer` and event loop. A synchronous `execute` on the instance's
worker thread waits on the loop; one the server runs inline on the loop suspends its batch in
the instance's greenlet while the loop runs the call, so that nothing runs twice and the loop
never waits (inline.py); an `async def execute` runs on the loop and awaits directly. Any call
from a synchronous model sends it to its own thread for good.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from trident.runtime.errors import CancelledError, InternalError, TridentError
from trident.runtime.types import InferenceRequest, InferenceResponse

from .errors import TritonModelException
from .inline import SERVER_CALL_NAMES, InlineRunner
from .scope import ModelScope, current_scope

if TYPE_CHECKING:
    from trident.backends.base import InstanceContext

T = TypeVar("T")


def running_instance() -> InstanceContext:
    """The InstanceContext of the model whose code is running; raises when there is none."""
    return _running_scope()[1]


def _running_scope() -> tuple[ModelScope, InstanceContext]:
    scope = current_scope()
    context = scope.context if scope is not None else None
    if scope is None or context is None:
        raise TritonModelException(
            "BLS requests can only be made while a model instance runs your code (initialize, "
            "execute, finalize). From a thread you start yourself, start it with "
            "contextvars.copy_context().run so that it knows its model."
        )
    return scope, context


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


def _on_server_loop(context: InstanceContext) -> bool:
    try:
        return asyncio.get_running_loop() is context.loop
    except RuntimeError:
        return False


def inline_runner(what: str) -> InlineRunner[Any] | None:
    """The calling instance's inline runner (None for models that never run inline), told of
    the server call `what` about to be made. Raises when the call cannot complete without
    running the batch again or hanging the server: made while the model's execute holds the
    loop inline, from outside the greenlet that could suspend it (see inline.py)."""
    scope, context = _running_scope()
    runner = scope.inline
    if runner is None:
        return None
    runner.server_called()
    _refuse_while_held(runner, what, context)
    return runner


def _refuse_while_held(runner: InlineRunner[Any], what: str, context: InstanceContext) -> None:
    if not runner.holding_loop or runner.runs_current_code():
        return
    model = context.model_name
    if _on_server_loop(context):  # execute itself, run inline without a greenlet
        names = ", ".join(SERVER_CALL_NAMES)
        raise TritonModelException(
            f"{what} was called while model '{model}' runs inline on the server's event loop, "
            f"and no .py file in its folder names a server call ({names}), which is how the "
            "server knows to let such a call suspend the batch: it cannot complete now without "
            "running the batch again. The model runs on its own thread from now on, where such "
            "calls work; send the request again"
        )
    raise TritonModelException(
        f"{what} was called from a thread of model '{model}' while the model's execute runs "
        "inline on the server's event loop, waiting for that thread: the call could never "
        "run. The model runs on its own thread from now on, where such calls work; send the "
        "request again"
    )


def wait_for_server(coroutine: Coroutine[Any, Any, T], what: str, on_loop_advice: str) -> T:
    """Run `coroutine` on the server's loop and return its outcome, from synchronous model
    code: blocking on the model's own thread, suspending the batch when it runs inline."""
    try:
        _, context = _running_scope()
        runner = inline_runner(what)
        suspend = runner is not None and runner.runs_current_code()
        if not suspend and _on_server_loop(context):
            raise TritonModelException(
                f"{what} waits for the server, but this code runs on the server's event loop "
                f"(an `async def execute`): {on_loop_advice}"
            )
    except BaseException:
        coroutine.close()  # never started: no "never awaited" warning
        raise
    if suspend:
        assert runner is not None
        return runner.wait(coroutine)  # type: ignore[no-any-return]
    return asyncio.run_coroutine_threadsafe(coroutine, _loop_of(context)).result()


def infer_blocking(request: InferenceRequest) -> InferenceResponse:
    """Run `request` and wait for its response; raises TridentError when it fails."""
    context = calling_instance()
    assert context.infer is not None
    return wait_for_server(
        context.infer(request),
        "InferenceRequest.exec()",
        "use `await request.async_exec()` instead",
    )


async def infer_awaitable(request: InferenceRequest) -> InferenceResponse:
    """Run `request` from a coroutine; works on the server's loop or on a loop of the model's."""
    context = calling_instance()
    assert context.infer is not None
    if asyncio.get_running_loop() is context.loop:
        return await context.infer(request)
    inline_runner("InferenceRequest.async_exec()")  # a loop of the model's, on its own thread
    future = asyncio.run_coroutine_threadsafe(context.infer(request), _loop_of(context))
    return await asyncio.wrap_future(future)


async def stream_collect(request: InferenceRequest) -> list[InferenceResponse]:
    """Run `request` on any model and gather all of its responses, the last one final."""
    context = calling_instance()
    assert context.stream_infer is not None
    if asyncio.get_running_loop() is context.loop:
        return await _gather(context.stream_infer(request))
    inline_runner("InferenceRequest.async_exec(decoupled=True)")
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
_STREAM_CALL = "InferenceRequest.exec(decoupled=True)"


class LiveStream:
    """Responses of a request to a (decoupled) model as they arrive, for synchronous model
    code: on the model's thread it blocks for each one, inline its batch suspends instead."""

    def __init__(self, request: InferenceRequest) -> None:
        context = calling_instance()
        assert context.stream_infer is not None
        self._runner = inline_runner(_STREAM_CALL)
        if _on_server_loop(context) and not self._suspends():
            raise TritonModelException(
                f"{_STREAM_CALL} waits for the server, but this code runs on the server's event "
                "loop (an `async def execute`): use "
                "`await request.async_exec(decoupled=True)` instead"
            )
        self._request = request
        self._context = context
        self._loop = _loop_of(context)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        #: Set while a suspended inline batch waits for the next response (loop thread only).
        self._arrival: asyncio.Future[None] | None = None
        self._future = asyncio.run_coroutine_threadsafe(
            self._pump(context.stream_infer(request)), self._loop
        )

    def _suspends(self) -> bool:
        return self._runner is not None and self._runner.runs_current_code()

    async def _pump(self, stream: AsyncIterator[InferenceResponse]) -> None:
        try:
            async for response in stream:
                self._put(response)
        except asyncio.CancelledError:
            self._put(InferenceResponse(error=CancelledError("the BLS request was cancelled")))
            raise
        except TridentError as exc:
            self._put(InferenceResponse(error=exc, final=True))
        except Exception as exc:  # the server failed: tell the model instead of hanging it
            self._put(InferenceResponse(error=InternalError(f"{type(exc).__name__}: {exc}")))
        finally:
            self._put(_END)

    def _put(self, item: object) -> None:
        """On the loop: queue `item` and wake a suspended inline batch waiting for it."""
        self._queue.put(item)
        arrival = self._arrival
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    async def _next_arrival(self) -> None:
        if self._queue.empty():
            self._arrival = self._loop.create_future()
            try:
                await self._arrival
            finally:
                self._arrival = None

    def next(self) -> InferenceResponse | None:
        """The next response, waiting for it; None once the stream has ended."""
        runner = self._runner
        if runner is not None and self._queue.empty():
            if runner.runs_current_code():
                while self._queue.empty():
                    runner.wait(self._next_arrival())
            else:  # a thread of the model's: refuse a wait that could never end
                _refuse_while_held(runner, _STREAM_CALL, self._context)
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
