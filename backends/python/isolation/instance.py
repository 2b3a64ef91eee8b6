"""An isolated Python model instance, as the server's core sees it.

`execute` is a coroutine on the event loop: it writes the batch's inputs (into the frame, or
into the process's ring when large), sends one EXECUTE frame and awaits the process's
EXEC_DONE, which the loop reads itself; the loop serves other requests meanwhile. Without
dynamic or sequence batching, an instance takes PIPELINE_DEPTH batches at once: the process
queues the next batch while it runs one (still one `execute` at a time, in order), so it never
waits for the server between batches. While batches are out, the loop also polls the socket
for their answers (busy_poll_us, settings.py) instead of sleeping.

Responses sent through response senders (decoupled models) arrive as RESPONSE frames and go to
their requests' responders; BLS requests from the model run through the server as tasks of this
instance.

When the process dies (or is killed for running past `execution_timeout_ms`), the batch it was
running fails with an error that names the model and how the process ended, batches it had not
begun run on the next process, the instance's health reason says so in the repository index,
and a new process is started.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trident.backends.base import ComputeTiming, InstanceContext, ModelInstance
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
#: Batches a pipelined instance may have sent to its process at once (see the module docstring).
PIPELINE_DEPTH = 4
#: Times a batch is sent again when its process died before it began the batch.
SEND_ATTEMPTS = 3


class _NotStarted(Exception):
    """The process died before it began this batch: the batch goes to the next process."""


@dataclass(slots=True)
class _Batch:
    """A batch sent to the process and not answered yet."""

    id: int
    future: asyncio.Future[list[RuntimeResponse] | None]
    tags: list[int]
    timing: ComputeTiming


class IsolatedModelInstance(ModelInstance):
    """A Python model instance whose code runs in a child process (see the module docstring)."""

    is_async = True

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
        config = context.config
        self.decoupled = config.model_transaction_policy.decoupled
        pipelined = not (
            self.decoupled
            or config.HasField("dynamic_batching")  # batches grow while the instance is busy
            or config.HasField("sequence_batching")
        )
        self.concurrent_executions = PIPELINE_DEPTH if pipelined else 1
        #: Decoupled models' answers come from their own threads, whenever: no polling.
        self._busy_poll_s = 0.0 if self.decoupled else settings.busy_poll_s
        self._batch_ids = itertools.count(1)
        self._request_tags = itertools.count(1)
        #: Requests the process may still answer through RESPONSE frames, by tag.
        self._open: dict[int, InFlightRequest] = {}
        #: Batches sent and not answered, in the order the process runs them: the first runs.
        self._batches: dict[int, _Batch] = {}
        self._timeout: asyncio.TimerHandle | None = None
        self._poller: asyncio.Handle | None = None
        self._poll_until = 0.0
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
            "busy_poll_s": self._busy_poll_s,
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

    async def execute(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[RuntimeResponse] | None:
        """Send the batch to the process (a running one: after a restart if need be) and wait
        for its answer; a batch the process died before beginning goes to the next one."""
        for _ in range(SEND_ATTEMPTS):
            process = self._process
            if process is None or process.closed or self._restart is not None:
                process = await self._running_process()
            batch = self._send_batch(process, requests, timing)
            if batch is None:
                # The process died before the batch reached it (its end of stream may not have
                # been read yet): nothing ran, so the batch goes to the next process.
                self._on_process_end(process)
                continue
            try:
                return await batch.future
            except _NotStarted:
                continue
        raise UnavailableError(
            f"model '{self._name}' instance '{self._instance}': its process keeps dying "
            f"before it can take a request: {self.health_reason}"
        )

    def _send_batch(
        self, process: ModelProcess, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> _Batch | None:
        """Write the inputs and send EXECUTE. The batch's future resolves with EXEC_DONE's
        responses (None: they go through response senders) or fails with the batch's error or
        the process's death. None when the process is already gone (the batch was not sent:
        the socket of a process that ended refuses it, also before its end of stream was
        read)."""
        assert process.to_child is not None
        tags = [next(self._request_tags) for _ in requests]
        items = list(zip(tags, requests, strict=True))
        payload, _ = wire.encode_requests(items, process.to_child, self._version)
        batch = _Batch(next(self._batch_ids), self._loop.create_future(), tags, timing)
        # Alone: requests come one at a time, and polling saves the process a wake-up per
        # request. With others out, the next batch is likely already sent when this one ends,
        # and a process polling at high load only takes CPU from the server and its clients.
        flags = Flag.POLL if self._busy_poll_s and not self._batches else 0
        if not process.send(wire.frame(Kind.EXECUTE, batch.id, payload, flags)):
            return None
        self._batches[batch.id] = batch
        for tag, request in items:
            self._open[tag] = request
            request.cancellation.add_callback(self._cancel_callback(process, tag))
        if len(self._batches) == 1:
            self._begin(batch)
        if self._unloading:  # queued before the unload, started after: the same deadline
            self._loop.call_at(self._unload_deadline, self._kill_if_busy)
        return batch

    def _begin(self, batch: _Batch) -> None:
        """`batch` is the one the process runs now: its execution timeout starts, and the loop
        polls for its answer."""
        batch.timing.input_end_ns = time.monotonic_ns()
        timeout_s = self._settings.execution_timeout_s
        if timeout_s:
            self._timeout = self._loop.call_later(timeout_s, self._kill_for_timeout, batch.id)
        if self._busy_poll_s:
            self._poll_until = self._loop.time() + self._busy_poll_s
            if self._poller is None:
                self._poller = self._loop.call_soon(self._poll)

    def _stop_timeout(self) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def _poll(self) -> None:
        """Read the process's answers without sleeping (busy_poll_us): while a callback is
        pending, the loop checks its sockets without blocking, so new requests are served at
        once too. Stops when nothing is out or the batch running took longer than the poll."""
        self._poller = None
        process = self._process
        if not self._batches or process is None or process.closed:
            return
        process.read_available()
        if self._batches and self._loop.time() < self._poll_until:
            self._poller = self._loop.call_soon(self._poll)

    def _cancel_callback(self, process: ModelProcess, tag: int) -> Any:
        def cancel() -> None:
            if tag in self._open and not process.closed:
                process.send(wire.frame(Kind.CANCEL, tag))

        return cancel

    def _kill_for_timeout(self, batch_id: int) -> None:
        """On the loop: kill the process still running batch `batch_id`."""
        self._timeout = None
        process = self._process
        if process is None or next(iter(self._batches), None) != batch_id:
            return
        timeout_s = self._settings.execution_timeout_s
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
        running = next(iter(self._batches), None)
        batch = self._batches.pop(batch_id, None)
        if batch is None:
            return
        batch.timing.output_start_ns = time.monotonic_ns()
        if batch_id == running:
            self._stop_timeout()
            following = next(iter(self._batches.values()), None)
            if following is not None:
                self._begin(following)
        if flags & Flag.FAILED:
            result: Any = wire.decode_error(payload)
        elif flags & Flag.RESPONSES:
            assert process.from_child is not None
            result = wire.decode_responses(payload, process.from_child, self._name)
        else:
            result = None  # the responses travel (or travelled) through response senders
        if result is not None:
            for tag in batch.tags:
                self._open.pop(tag, None)
        if batch.future.done():  # its waiter was cancelled
            return
        if isinstance(result, TridentError):
            batch.future.set_exception(result)
        else:
            batch.future.set_result(result)

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

    def _fail_held(self, error: TridentError, retry_unstarted: bool = True) -> None:
        """Fail what the process held: the batch it ran with `error`, the batches it had not
        begun with _NotStarted (their `execute` sends them again) unless not `retry_unstarted`,
        open decoupled requests, and the BLS calls it made."""
        batches, self._batches = self._batches, {}
        self._stop_timeout()
        batch_tags: set[int] = set()
        for index, batch in enumerate(batches.values()):
            batch_tags.update(batch.tags)
            if not batch.future.done():
                unstarted = index > 0 and retry_unstarted
                batch.future.set_exception(_NotStarted() if unstarted else error)
        open_requests, self._open = self._open, {}
        for tag, request in open_requests.items():
            if tag not in batch_tags:  # the failed batches' requests are failed by the core
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
        process = self._process
        if not self._batches or process is None or process.closed:
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
        self._fail_held(UnavailableError(f"model '{self._name}' was unloaded"), False)
        if process is not None and not process.closed:
            process.send(wire.frame(Kind.FINALIZE))
        return process


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
