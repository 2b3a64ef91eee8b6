"""Inline execution of a synchronous Python model that may wait for the server (BLS).

The core runs a short synchronous `execute` directly on the event loop (runtime/core/
instances.py). A model that then waits for the server, with a BLS `exec()`, a decoupled BLS
stream or `pb_utils.load_model`, needs the loop to run that request: blocking would hang the
server, and unwinding the batch to run it again on the worker thread would repeat whatever the
model did before the call (a counter, a file write, a sequence's state). No batch is ever
executed twice here:

- Any server call from the instance's code (once it is loaded) keeps it on its thread for good,
  so a model that calls the server while its executions are watched never goes inline.
- A model whose source files name a server call (`SERVER_CALL_NAMES`, anywhere in the .py
  files of its folder) runs its inline batches inside one greenlet of its own, on the loop's
  thread. A call from inside it switches back to the loop with the coroutine to run, leaving the
  model's stack suspended where it is; the core hands the batch over to the worker thread
  (MustRunOnWorkerThread), whose `execute` waits while the loop awaits the coroutine and
  resumes the model with its result, call after call, until the batch is done. The loop never
  waits and no model code runs twice.
- Other models run inline without a greenlet: a switch into it and back is a cost (measured in
  perf/README.md, "bench_python_inline.py") that models that never call the server need not pay.
  Should one call the server inline all the same (through a name built at run time, or a
  library outside its folder), the call fails at once with an error that says why, and the
  batch, finished, goes to the thread with the instance.
- A call from a thread the model started, while its execute holds the loop inline waiting for
  that thread, could never run: it fails at once, and the instance leaves the loop.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Generic, TypeVar

import greenlet

from trident.backends.base import ComputeTiming, MustRunOnWorkerThread
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import ModelExecutionError

R = TypeVar("R")

#: The names through which model code calls the server: BLS (`InferenceRequest.exec`,
#: `async_exec`) and the model loading API.
SERVER_CALL_NAMES = ("exec", "async_exec", "load_model", "unload_model", "is_model_ready")
_SERVER_CALL = re.compile(rb"\b(?:" + "|".join(SERVER_CALL_NAMES).encode() + rb")\b")
#: Past this much Python source in its folder, a model is taken to call the server unread.
SOURCE_SCAN_LIMIT_BYTES = 32 * 1024 * 1024

#: What the inline greenlet switches back with when its batch has ended (result or error set).
_FINISHED = object()
#: What `close` sends into a parked greenlet: return, ending it.
_STOP = object()


class _Wait:
    """A suspended batch's request to the loop: run `coroutine`, resume the batch with its
    result (or its exception)."""

    __slots__ = ("coroutine",)

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.coroutine = coroutine


class _HandedOver:
    """The batch an inline run handed to the worker thread: its requests, the timing its
    inline part wrote into, and what it waits for (None: it has finished)."""

    __slots__ = ("requests", "timing", "waiting")

    def __init__(
        self, requests: list[InFlightRequest], timing: ComputeTiming, waiting: _Wait | None
    ) -> None:
        self.requests = requests
        self.timing = timing
        self.waiting = waiting


class InlineRunner(Generic[R]):
    """Runs one synchronous instance's inline batches on the loop's thread, in a greenlet when
    `suspends` (see the module docstring). `execute(requests, timing)` is the instance's own
    execution; `on_server_call` is called once, at its first call to the server."""

    __slots__ = (
        "_error",
        "_execute",
        "_greenlet",
        "_handed_over",
        "_loop",
        "_on_server_call",
        "_parked",
        "_result",
        "armed",
        "called_server",
        "holding_loop",
        "suspends",
    )

    def __init__(
        self,
        execute: Callable[[list[InFlightRequest], ComputeTiming], R],
        loop: asyncio.AbstractEventLoop,
        on_server_call: Callable[[], None],
        suspends: bool,
    ) -> None:
        self._execute: Callable[[list[InFlightRequest], ComputeTiming], R] | None = execute
        self._loop = loop
        self._on_server_call = on_server_call
        self._greenlet: greenlet.greenlet | None = None
        self._handed_over: _HandedOver | None = None
        self._result: R | None = None
        self._error: BaseException | None = None
        #: Whether the greenlet waits for its next batch (rather than for the server).
        self._parked = False
        #: Server calls count from when the instance is loaded: one in `initialize` says
        #: nothing about `execute`.
        self.armed = False
        #: True once the instance's code has called the server: it never runs inline again.
        self.called_server = False
        #: True while the instance's code runs on the loop's thread, the loop waiting for it.
        self.holding_loop = False
        #: Whether inline batches run in the greenlet, where server calls suspend them.
        self.suspends = suspends

    # ------------------------------------------------------------------ on the loop's thread

    def run(self, requests: list[InFlightRequest], timing: ComputeTiming) -> R:
        """Run one batch inline, now. Raises MustRunOnWorkerThread when the batch waits for
        the server, or called it: the core then calls `finish` from the worker thread."""
        if self.suspends:
            return self._run_in_greenlet(requests, timing)
        # Right here, no greenlet. A server call the batch made failed (bls.py): the batch,
        # finished, is handed over all the same, so that the instance leaves the loop.
        self.holding_loop = True
        try:
            result = self._execute(requests, timing)  # type: ignore[misc]  # never once closed
        except BaseException as exc:
            if not self.called_server:
                raise
            self._error = exc
        else:
            if not self.called_server:
                return result
            self._result = result
        finally:
            self.holding_loop = False
        self._handed_over = _HandedOver(requests, timing, None)
        raise MustRunOnWorkerThread

    def _run_in_greenlet(self, requests: list[InFlightRequest], timing: ComputeTiming) -> R:
        worker = self._greenlet
        if worker is None or worker.dead:
            # The loop's current greenlet is its parent: where every switch out returns.
            worker = self._greenlet = greenlet.greenlet(self._serve)
        self._parked = False
        self.holding_loop = True
        try:
            state = worker.switch(requests, timing)
        finally:
            self.holding_loop = False
        if state is _FINISHED:
            self._parked = True
            if not self.called_server:
                return self._take()
        # A wait for the server, or a call from one of the model's threads (which failed, the
        # loop being held): either way the instance leaves the loop now, this batch included.
        waiting = state if isinstance(state, _Wait) else None
        self._handed_over = _HandedOver(requests, timing, waiting)
        raise MustRunOnWorkerThread

    def _serve(self, requests: list[InFlightRequest], timing: ComputeTiming) -> None:
        """The greenlet's body: run batches until told to stop. Model code runs here."""
        parent = greenlet.getcurrent().parent
        while True:
            execute = self._execute
            if execute is None:  # closed meanwhile
                return
            try:
                self._result = execute(requests, timing)
            except BaseException as exc:  # the instance's failure: raised where it is taken
                self._error = exc
            # Drop the batch and the instance before parking: a parked greenlet holds nothing.
            del requests, timing, execute
            batch = parent.switch(_FINISHED)
            if batch is _STOP:
                return
            requests, timing = batch
            batch = None

    def wait(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """From model code inside this runner's greenlet: suspend the batch until the loop has
        run `coroutine`; return its result or raise its exception."""
        return greenlet.getcurrent().parent.switch(_Wait(coroutine))

    def runs_current_code(self) -> bool:
        """Whether the caller is model code running inside this runner's greenlet."""
        return self._greenlet is not None and greenlet.getcurrent() is self._greenlet

    async def _continue(self, handed: _HandedOver) -> R:
        """Await what the batch waits for and resume it with the outcome, call after call, until
        it has finished (on the loop, for the worker thread's `finish`)."""
        worker = self._greenlet
        assert worker is not None
        waiting = handed.waiting
        while waiting is not None:
            try:
                value = await waiting.coroutine
            except BaseException as exc:  # the call's failure is the model's to handle
                self.holding_loop = True
                try:
                    state = worker.throw(exc)
                finally:
                    self.holding_loop = False
            else:
                self.holding_loop = True
                try:
                    state = worker.switch(value)
                finally:
                    self.holding_loop = False
            waiting = state if isinstance(state, _Wait) else None
        self._parked = True
        return self._take()

    # ------------------------------------------------------------------ on the worker thread

    def has_handed_over(self) -> bool:
        return self._handed_over is not None

    def finish(self, requests: list[InFlightRequest], timing: ComputeTiming) -> R:
        """Complete the batch `run` handed over (the same requests), waiting for the loop to
        resume it; runs none of its code again."""
        handed, self._handed_over = self._handed_over, None
        if handed is None or not _same_requests(handed.requests, requests):
            raise ModelExecutionError(
                "internal error: a batch handed over by an inline execution was not the one "
                "continued on the instance's thread"
            )
        try:
            if handed.waiting is None:
                return self._take()
            return asyncio.run_coroutine_threadsafe(self._continue(handed), self._loop).result()
        finally:
            timing.input_end_ns = handed.timing.input_end_ns
            timing.output_start_ns = handed.timing.output_start_ns

    # ------------------------------------------------------------------ anywhere

    def server_called(self) -> None:
        """The instance's code called the server: it runs on its thread from now on."""
        if self.armed and not self.called_server:
            self.called_server = True
            self._on_server_call()

    def close(self) -> None:
        """End the parked greenlet on the loop's thread (it holds a frame of this runner) and
        forget the instance's execution."""
        self._execute = None
        worker, self._greenlet = self._greenlet, None
        if worker is None or worker.dead:
            return

        def stop() -> None:
            if self._parked and not worker.dead:
                worker.switch(_STOP)

        if greenlet.getcurrent() is worker.parent:
            stop()
            return
        try:
            self._loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the loop is closed: the greenlet goes with this runner
            pass

    def _take(self) -> R:
        result, error = self._result, self._error
        self._result = self._error = None
        if error is not None:
            raise error
        return result  # type: ignore[return-value]


def _same_requests(first: list[InFlightRequest], second: list[InFlightRequest]) -> bool:
    """The same requests (the core continues a handed-over batch in a list of its own)."""
    return len(first) == len(second) and all(a is b for a, b in zip(first, second, strict=True))


def sources_name_server_calls(model_dir: Path) -> bool:
    """Whether a .py file in `model_dir` (its versions and sibling modules included) names a
    server call, as a word anywhere (comments too: a false positive only costs a greenlet).
    True when the sources cannot all be read or pass SOURCE_SCAN_LIMIT_BYTES."""
    total = 0
    for root, _, files in os.walk(model_dir):  # symlinked folders are not entered
        for name in files:
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(root, name), "rb") as source:
                    data = source.read(SOURCE_SCAN_LIMIT_BYTES - total + 1)
            except OSError:
                return True
            total += len(data)
            if total > SOURCE_SCAN_LIMIT_BYTES or _SERVER_CALL.search(data):
                return True
    return False
