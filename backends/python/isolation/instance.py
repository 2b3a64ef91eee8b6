"""An isolated Python model instance, as the server's core sees it.

`execute` runs on the event loop: it writes the batch's inputs into the process's ring, sends
one EXECUTE frame and awaits the process's EXEC_DONE, which the loop reads itself. Responses sent
through response senders (decoupled models) arrive as RESPONSE frames and go to their requests'
responders; BLS requests from the model run through the server as tasks of this instance.

When the process dies (or is killed for running past `execution_timeout_ms`), every request it
held fails with an error that names the model and how the process ended, the instance's health
reason says so in the repository index, and a new process is started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import select
import threading
import time
from pathlib import Path
from typing import Any

from trident.backends.base import (
    ComputeTiming,
    InstanceContext,
    ModelInstance,
    MustRunOnWorkerThread,
)
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.model_config import config_to_json
from trident.runtime.errors import (
    CancelledError,
    ModelExecutionError,
    ModelLoadError,
    TridentError,
    UnavailableError,
)
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest as RuntimeRequest
from trident.runtime.types import InferenceResponse as RuntimeResponse

from . import wire
from .process import ModelProcess, describe_exit, emit_log
from .settings import MIN_SHM_RING_BYTES, IsolationSettings
from .wire import Flag, Kind

logger = logging.getLogger("trident.backends.python")

#: How long an unload waits for the model's `finalize` in its process before killing it.
FINALIZE_TIMEOUT_S = 30.0
#: How long an unload lets a running execute finish before killing its process.
UNLOAD_GRACE_S = 10.0
#: How long an inline execute blocks the event loop waiting for the model process's answer
#: before handing the batch to the instance's worker thread (for good: see instances.py).
INLINE_WAIT_S = 0.010


class IsolatedModelInstance(ModelInstance):
    """A Python model instance whose code runs in a child process (see the module docstring)."""

    is_async = False
    #: Waiting inline costs no CPU, so the core's CPU test always passes and the wall-time
    #: factors of this threshold decide (runtime/core/instances.py): on average under 5 ms on
    #: the thread to go inline, back to the thread for good after an inline execute of 50 ms
    #: (a busy machine's preemption counts too); a batch not answered within INLINE_WAIT_S
    #: goes to the thread.
    inline_threshold_ns = 1_000_000

    def __init__(self, context: InstanceContext, settings: IsolationSettings) -> None:
        if context.loop is None:
            raise ModelLoadError(
                f"model '{context.model_name}': process isolation needs the server's event loop"
            )
        self._context = context
        self._loop = context.loop
        self._settings = settings
        self._name = context.model_name
        self._instance = context.instance_name
        self._version = context.model_version
        self.decoupled = context.config.model_transaction_policy.decoupled
        # Decoupled models keep sending after execute returns: they stay on their thread.
        self.may_run_inline = not self.decoupled
        self._batch_ids = itertools.count(1)
        self._request_tags = itertools.count(1)
        #: Requests the process may still answer through RESPONSE frames, by tag.
        self._open: dict[int, InFlightRequest] = {}
        #: The batch awaiting EXEC_DONE: (batch id, its future, its request tags).
        self._batch: tuple[int, concurrent.futures.Future[Any], list[int]] | None = None
        #: A batch an inline execute sent but handed to the worker thread to wait for.
        self._handed_over: tuple[list[InFlightRequest], concurrent.futures.Future[Any]] | None = (
            None
        )
        self._bls_tasks: dict[int, asyncio.Task[None]] = {}
        self._death_cause = ""
        self._restart: asyncio.Future[None] | None = None
        self._closing = False
        self._unloading = False
        #: When an unload began plus UNLOAD_GRACE_S (loop time): a batch still running then
        #: is killed, whether it started before the unload or was queued and started after.
        self._unload_deadline = 0.0
        self.restarts = 0
        #: Shown as the reason of this model in the repository index while not empty.
        self.health_reason = ""
        self._process: ModelProcess | None = self._start_process()
        self._attach_from_thread(self._process)

    # ----------------------------------------------------------------------------- processes

    def _init_message(self) -> dict[str, Any]:
        context = self._context
        return {
            "mode": "instance",
            "config": context.config.SerializeToString().hex(),
            "config_json": context.config_json or config_to_json(context.config),
            "model_name": context.model_name,
            "model_version": context.model_version,
            "model_dir": str(context.model_dir),
            "version_dir": str(context.version_dir),
            "instance_name": context.instance_name,
            "kind": context.kind,
            "device_id": context.device_id,
            "instance_index": context.instance_index,
            "log_level": logging.getLogger("trident.python_model").getEffectiveLevel(),
            # Decoupled models' own threads send responses: a polling main thread would hold
            # the GIL they need.
            "busy_poll_s": 0.0 if self.decoupled else self._settings.busy_poll_s,
        }

    def _start_process(self) -> ModelProcess:
        """Start a model process and wait until its model is loaded (blocks)."""
        process = ModelProcess(self._settings.shm_ring_bytes)
        try:
            process.start(self._init_message())
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"Python model '{self._name}' (instance '{self._instance}', in its own "
                f"process): {exc.message}"
            ) from None
        return process

    def _attach(self, process: ModelProcess) -> None:
        """Read `process`'s frames on the loop (call on the loop's thread)."""

        def on_frame(kind: int, flags: int, tag: int, payload: memoryview) -> None:
            self._on_frame(process, kind, flags, tag, payload)

        process.attach(self._loop, on_frame, lambda: self._on_process_end(process))

    def _attach_from_thread(self, process: ModelProcess) -> None:
        def attach() -> None:
            self._attach(process)

        if _on_loop(self._loop):
            attach()
            return
        done = threading.Event()

        def attach_and_signal() -> None:
            try:
                attach()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(attach_and_signal)
        if not done.wait(60):
            process.stop(kill=True)
            raise ModelLoadError(f"model '{self._name}': the server's event loop did not answer")

    # ----------------------------------------------------------------------------- execute

    def execute(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[RuntimeResponse] | None:
        """Inline (on the loop, see INLINE_WAIT_S) or on the instance's worker thread."""
        if _on_loop(self._loop):
            return self._execute_inline(requests, timing)
        return self._execute_from_thread(requests, timing)

    def _execute_inline(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[RuntimeResponse] | None:
        """Send the batch and wait for the answer right here, reading the socket ourselves:
        the whole request then completes without a task or a loop turn, as an in-process
        inline model does. A batch not answered within INLINE_WAIT_S, or one whose model made
        a BLS call (the loop must run it), is handed to the worker thread still in flight."""
        process = self._process
        if process is None or process.closed or self._restart is not None:
            raise MustRunOnWorkerThread  # nothing was sent: the thread starts it afresh
        future = self._send_batch(process, requests)
        if future is None:  # the process died before the batch reached it: retry on the next
            raise MustRunOnWorkerThread
        timing.input_end_ns = time.monotonic_ns()
        now = time.monotonic()
        deadline = now + INLINE_WAIT_S
        poll_until = now + self._settings.busy_poll_s
        sock = process.sock
        assert sock is not None
        while not future.done() and not self._bls_tasks and process is self._process:
            now = time.monotonic()
            if now < poll_until:  # busy polling (settings.py): read without sleeping
                process.read_available()
                continue
            remaining = deadline - now
            if remaining <= 0:
                break
            readable, _, _ = select.select((sock,), (), (), remaining)
            if readable:
                process.read_available()
        if not future.done():
            self._handed_over = (requests, future)
            raise MustRunOnWorkerThread
        timing.output_start_ns = time.monotonic_ns()
        return future.result()  # type: ignore[no-any-return]

    def _execute_from_thread(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[RuntimeResponse] | None:
        handed, self._handed_over = self._handed_over, None
        if handed is not None and _same_requests(handed[0], requests):
            future, sent_at = handed[1], time.monotonic() - INLINE_WAIT_S
        else:
            future = asyncio.run_coroutine_threadsafe(
                self._send_when_running(requests), self._loop
            ).result()
            sent_at = time.monotonic()
        timing.input_end_ns = time.monotonic_ns()
        timeout_s = self._settings.execution_timeout_s
        try:
            result = future.result(
                max(timeout_s - (time.monotonic() - sent_at), 0.0) if timeout_s else None
            )
        except concurrent.futures.TimeoutError:
            self._loop.call_soon_threadsafe(self._kill_for_timeout, future, timeout_s)
            result = future.result()  # failed once the process is reaped
        timing.output_start_ns = time.monotonic_ns()
        return result  # type: ignore[no-any-return]

    async def _send_when_running(
        self, requests: list[InFlightRequest]
    ) -> concurrent.futures.Future[Any]:
        for _ in range(3):
            process = self._process
            if process is None or process.closed or self._restart is not None:
                process = await self._running_process()
            future = self._send_batch(process, requests)
            if future is not None:
                return future
            # The process died before the batch reached it (its end of stream may not have
            # been read yet): nothing ran, so the batch goes to the next process.
            self._on_process_end(process)
        raise UnavailableError(
            f"model '{self._name}' instance '{self._instance}': its process keeps dying "
            f"before it can take a request: {self.health_reason}"
        )

    def _send_batch(
        self, process: ModelProcess, requests: list[InFlightRequest]
    ) -> concurrent.futures.Future[Any] | None:
        """Write the inputs into the ring and send EXECUTE (on the loop's thread). The future
        resolves with EXEC_DONE's responses (None: they go through response senders) or fails
        with the batch's error or the process's death. None when the process is already gone
        (the batch was not sent)."""
        assert process.to_child is not None
        if process.returncode is not None:  # dead, its end of stream not read yet
            return None
        tags = [next(self._request_tags) for _ in requests]
        items = list(zip(tags, requests, strict=True))
        payload, _ = wire.encode_requests(items, process.to_child, self._version)
        batch_id = next(self._batch_ids)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._batch = (batch_id, future, tags)
        if not process.send(wire.frame(Kind.EXECUTE, batch_id, payload)):
            self._batch = None
            return None
        for tag, request in items:
            self._open[tag] = request
            request.cancellation.add_callback(self._cancel_callback(process, tag))
        if self._unloading:  # queued before the unload, started after: the same deadline
            self._loop.call_at(self._unload_deadline, self._kill_if_busy)
        return future

    def _cancel_callback(self, process: ModelProcess, tag: int) -> Any:
        def cancel() -> None:
            if tag in self._open and not process.closed:
                process.send(wire.frame(Kind.CANCEL, tag))

        return cancel

    def _kill_for_timeout(self, future: concurrent.futures.Future[Any], timeout_s: float) -> None:
        """On the loop: kill the process still running the batch of `future`."""
        process = self._process
        if future.done() or process is None or self._batch is None or self._batch[1] is not future:
            return
        self._death_cause = (
            f"ran past its execution_timeout_ms ({timeout_s * 1000:.0f} ms) and was killed"
        )
        logger.error(
            "model '%s' instance '%s': execute %s; restarting its process",
            self._name,
            self._instance,
            self._death_cause,
        )
        process.kill()  # the end of its stream fails the batch (_on_process_end)

    async def _running_process(self) -> ModelProcess:
        """The live process, after waiting for a restart (or starting one) if need be."""
        if self._closing or self._unloading:
            raise UnavailableError(f"model '{self._name}' is being unloaded")
        if self._restart is None:
            self._restart = asyncio.ensure_future(self._restart_process())
        await asyncio.shield(self._restart)
        process = self._process
        if process is None or process.closed:
            raise UnavailableError(
                f"model '{self._name}' instance '{self._instance}' has no running process: "
                f"{self.health_reason}"
            )
        return process

    # ----------------------------------------------------------------------------- frames

    def _on_frame(
        self, process: ModelProcess, kind: int, flags: int, tag: int, payload: memoryview
    ) -> None:
        if process.from_child is None:
            return
        if process is not self._process:  # a finalizing or dead process: only its logs count
            if kind == Kind.LOG:
                emit_log(flags, payload)
            return
        if kind == Kind.EXEC_DONE:
            self._on_exec_done(process, flags, tag, payload)
        elif kind == Kind.RESPONSE:
            request = self._open.get(tag)
            responses = wire.decode_responses(payload, process.from_child, self._name)
            if flags & Flag.FINAL:
                self._open.pop(tag, None)
            if request is not None:
                for response in responses:
                    request.responder.send(response)
        elif kind == Kind.BLS_REQUEST:
            decoded, _ = wire.decode_requests(payload, process.from_child, copy=True)
            for item in decoded:
                task = self._loop.create_task(
                    self._run_bls(process, tag, item.request, bool(flags & Flag.STREAM))
                )
                self._bls_tasks[tag] = task
                task.add_done_callback(functools.partial(self._forget_bls, tag))
        elif kind == Kind.BLS_CANCEL:
            running = self._bls_tasks.get(tag)
            if running is not None:
                running.cancel()
        elif kind == Kind.LOG:
            emit_log(flags, payload)

    def _forget_bls(self, call_id: int, _: object) -> None:
        self._bls_tasks.pop(call_id, None)

    def _on_exec_done(
        self, process: ModelProcess, flags: int, batch_id: int, payload: memoryview
    ) -> None:
        batch = self._batch
        if batch is None or batch[0] != batch_id:
            return
        _, future, tags = batch
        self._batch = None
        if flags & Flag.FAILED:
            result: Any = wire.decode_error(payload)
        elif flags & Flag.RESPONSES:
            assert process.from_child is not None
            result = wire.decode_responses(payload, process.from_child, self._name)
        else:
            result = None  # the responses travel (or travelled) through response senders
        if result is not None:
            for tag in tags:
                self._open.pop(tag, None)
        if future.done():
            return
        if isinstance(result, TridentError):
            future.set_exception(result)
        else:
            future.set_result(result)

    async def _run_bls(
        self, process: ModelProcess, call_id: int, request: RuntimeRequest, stream: bool
    ) -> None:
        """Run one BLS request of the model through the server; send the response(s) back."""
        context = self._context
        try:
            if not stream:
                assert context.infer is not None
                try:
                    responses = [await context.infer(request)]
                except TridentError as exc:
                    responses = [RuntimeResponse(error=exc)]
                self._send_bls(process, call_id, responses, Flag.FINAL)
                return
            assert context.stream_infer is not None
            try:
                async for response in context.stream_infer(request):
                    self._send_bls(
                        process, call_id, [response], Flag.FINAL if response.final else 0
                    )
            except TridentError as exc:
                self._send_bls(process, call_id, [RuntimeResponse(error=exc)], Flag.FINAL)
                return
            process.send(wire.frame(Kind.BLS_RESPONSE, call_id, b"", Flag.END))
        except asyncio.CancelledError:
            request.cancellation.cancel()
            self._send_bls(
                process,
                call_id,
                [RuntimeResponse(error=CancelledError("the BLS request was cancelled"))],
                Flag.FINAL,
            )
        except Exception as exc:  # the server failed: tell the model instead of hanging it
            logger.exception("BLS request of model '%s' failed", self._name)
            error = ModelExecutionError(f"BLS request failed in the server: {exc}")
            self._send_bls(process, call_id, [RuntimeResponse(error=error)], Flag.FINAL)

    def _send_bls(
        self, process: ModelProcess, call_id: int, responses: list[RuntimeResponse], flags: int
    ) -> None:
        if process.closed or process.to_child is None:
            return
        payload, _ = wire.encode_responses(responses, process.to_child)
        process.send(wire.frame(Kind.BLS_RESPONSE, call_id, payload, flags))

    # ----------------------------------------------------------------------------- failures

    def _on_process_end(self, process: ModelProcess) -> None:
        """The process's stream ended (on the loop): from now on requests wait for a new one."""
        if process is not self._process or self._closing:
            return
        self._process = None
        self._restart = asyncio.ensure_future(self._handle_death(process))

    async def _handle_death(self, process: ModelProcess) -> None:
        """Reap the dead process, fail every request it held, start a new one."""
        code = await asyncio.to_thread(process.stop, False, 2.0)
        cause = self._death_cause or describe_exit(code)
        self._death_cause = ""
        message = (
            f"the process of Python model '{self._name}' (instance '{self._instance}', pid "
            f"{process.pid}) {cause} while it held this request; a new process is being started"
        )
        if self._unloading:
            message = message.replace("a new process is being started", "the model is unloading")
        logger.error("%s", message.replace(" while it held this request", ""))
        self._fail_held(ModelExecutionError(message))
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.health_reason = f"instance '{self._instance}': its process {cause} at {when}"
        if self._unloading:
            self._restart = None
            return
        await self._restart_process()

    def _fail_held(self, error: TridentError) -> None:
        batch, self._batch = self._batch, None
        batch_tags: set[int] = set()
        if batch is not None:
            _, future, tags = batch
            batch_tags = set(tags)
            if not future.done():
                future.set_exception(error)
        open_requests, self._open = self._open, {}
        for tag, request in open_requests.items():
            if tag not in batch_tags:  # the failed batch's requests are failed by the core
                request.responder.send(RuntimeResponse(error=error, final=True))
        for task in list(self._bls_tasks.values()):
            task.cancel()

    async def _restart_process(self) -> None:
        if self._closing:
            self._restart = None
            return
        try:
            process = await asyncio.to_thread(self._start_process)
        except ModelLoadError as exc:
            self.health_reason = f"{self.health_reason}; restarting it failed: {exc.message}"
            logger.error("%s", self.health_reason)
            self._restart = None  # the next request tries again
            return
        if self._closing:
            await asyncio.to_thread(process.stop, True)
            self._restart = None
            return
        self.restarts += 1
        self._attach(process)
        self._process = process
        self._restart = None
        logger.warning(
            "model '%s' instance '%s': new process %d started (restart %d)",
            self._name,
            self._instance,
            process.pid,
            self.restarts,
        )
        if self.health_reason:
            self.health_reason += f"; restarted ({self.restarts} restarts so far)"

    # ----------------------------------------------------------------------------- unload

    def unloading(self) -> None:
        """The model is being unloaded (on the loop, before the core waits for running
        executes): a process still busy UNLOAD_GRACE_S later is killed, so that a hung model
        cannot hold up an unload or a server stop for ever."""
        self._unloading = True
        self._unload_deadline = self._loop.time() + UNLOAD_GRACE_S
        self._loop.call_at(self._unload_deadline, self._kill_if_busy)

    def _kill_if_busy(self) -> None:
        batch, process = self._batch, self._process
        if batch is None or process is None or process.closed or batch[1].done():
            return
        self._death_cause = (
            f"was still running an execute {UNLOAD_GRACE_S:g} s after the model's unload "
            "began and was killed"
        )
        logger.error("model '%s' instance '%s': %s", self._name, self._instance, self._death_cause)
        process.kill()

    def close(self) -> None:
        """Run `finalize` in the process (killing it after FINALIZE_TIMEOUT_S), end it and
        remove its shared memory."""
        loop = self._loop
        if _on_loop(loop) or loop.is_closed() or not loop.is_running():
            self._closing = True
            process, self._process = self._process, None
            if process is not None:
                process.detach()
                process.stop(kill=True, wait_s=1.0)
            return
        process = asyncio.run_coroutine_threadsafe(self._begin_close(), loop).result()
        if process is not None:
            process.stop(kill=False, wait_s=FINALIZE_TIMEOUT_S)
            loop.call_soon_threadsafe(process.detach)

    async def _begin_close(self) -> ModelProcess | None:
        """On the loop: stop restarts, fail what is held, ask the process to finalize."""
        self._closing = True
        restart = self._restart
        if restart is not None:
            await asyncio.wait((restart,))
        process, self._process = self._process, None
        self._fail_held(UnavailableError(f"model '{self._name}' was unloaded"))
        if process is not None and not process.closed:
            process.send(wire.frame(Kind.FINALIZE))
        return process


def _same_requests(first: list[InFlightRequest], second: list[InFlightRequest]) -> bool:
    """The same requests (the core continues a handed-over batch in a list of its own)."""
    return len(first) == len(second) and all(a is b for a, b in zip(first, second, strict=True))


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def auto_complete_in_process(config: mc.ModelConfig, model_dir: Path) -> None:
    """Run the model's `auto_complete_config` in a process of its own and apply the result to
    `config` in place (blocks: call off the event loop). Skipped, saving a process start, when
    no Python file of the model mentions `auto_complete_config` (then it cannot define one,
    short of inheriting it from an installed package)."""
    if not _mentions_auto_complete(model_dir):
        return
    process = ModelProcess(MIN_SHM_RING_BYTES)
    init = {
        "mode": "auto_complete",
        "config": config.SerializeToString().hex(),
        "model_dir": str(model_dir),
        "log_level": logging.getLogger("trident.python_model").getEffectiveLevel(),
    }
    try:
        facts = process.start(init)
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"auto-completing the config of Python model '{config.name}' (in its own process) "
            f"failed: {exc.message}"
        ) from None
    finally:
        process.stop(wait_s=5.0)
    completed = mc.ModelConfig()
    completed.ParseFromString(bytes.fromhex(facts["config"]))
    config.CopyFrom(completed)


def _mentions_auto_complete(model_dir: Path) -> bool:
    try:
        folders = [model_dir, *(child for child in model_dir.iterdir() if child.name.isdigit())]
    except OSError:
        return True  # cannot tell: ask the model
    for folder in folders:
        for source in folder.glob("*.py"):
            try:
                if b"auto_complete_config" in source.read_bytes():
                    return True
            except OSError:
                return True  # cannot tell: ask the model
    return False
