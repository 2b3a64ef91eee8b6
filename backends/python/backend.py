"""The Python backend: runs a Triton `model.py` (class TritonPythonModel) in the server process.

Triton starts a stub process per instance and moves every tensor through shared memory; here the
model's `execute` gets the request arrays themselves. A synchronous `execute` runs on the
instance's worker thread, or inline on the event loop once its executions prove short (in a
greenlet, so that a BLS call suspends the batch: inline.py); an `async def execute` runs on the
server's event loop (so it must not block). Decoupled async models run each batch as a task of
their own, so one instance serves many requests at once while they wait (Triton 24.04+ does the
same).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from trident.backends.base import (
    Backend,
    ComputeTiming,
    InstanceContext,
    ModelInstance,
)
from trident.runtime.core.in_flight import InFlightRequest as RuntimeRequest
from trident.runtime.core.model_config import config_to_json
from trident.runtime.errors import ModelExecutionError, ModelLoadError, UnavailableError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceResponse as RuntimeResponse

from .autocomplete import run_auto_complete
from .inline import InlineRunner, sources_name_server_calls
from .isolation.instance import IsolatedModelInstance, auto_complete_in_process
from .isolation.settings import IsolationSettings
from .loader import ImportedModel, describe_exception, import_model_file
from .messages import InferenceRequest, InferenceResponse
from .metrics import render_custom_metrics
from .scope import ModelScope, enter, entered, leave

logger = logging.getLogger("trident.backends.python")

DEFAULT_MODEL_FILENAME = "model.py"
#: How long an unload waits for a decoupled async model's running batches before cancelling them.
_DRAIN_TIMEOUT_S = 30.0
#: Python models run inline while their executions average under this (see ModelInstance).
PYTHON_INLINE_THRESHOLD_NS = 2_000_000


class PythonBackend(Backend):
    name = "python"
    platforms = ()
    default_model_filename = DEFAULT_MODEL_FILENAME

    def metrics_text(self) -> str:
        """Series of the pb_utils.MetricFamily metrics that Python models created."""
        return render_custom_metrics()

    def auto_complete_config(self, config: mc.ModelConfig, model_dir: Path, strict: bool) -> None:
        """Run the model's static `auto_complete_config`, if it has one (never when strict)."""
        if strict:
            return
        if IsolationSettings.from_config(config).isolated:
            # Importing an isolated model's code here could end the server: its process does.
            auto_complete_in_process(config, model_dir)
            return
        auto_complete_here(config, model_dir)

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        settings = IsolationSettings.from_config(context.config)
        if settings.isolated:
            return IsolatedModelInstance(context, settings)
        return PythonModelInstance(context)


def create_backend() -> Backend:
    return PythonBackend()


def auto_complete_here(config: mc.ModelConfig, model_dir: Path) -> None:
    """Import the model's latest version in this process and run its `auto_complete_config`."""
    filename = config.default_model_filename or DEFAULT_MODEL_FILENAME
    version_dir = _latest_version_dir(model_dir, filename)
    if version_dir is None:
        return  # loading the version reports the missing file
    name = config.name or model_dir.name
    imported = import_model_file(
        version_dir / filename, name, int(version_dir.name), [version_dir, model_dir]
    )
    try:
        model_class = _model_class(imported, version_dir / filename)
        with entered(ModelScope(None, imported.importer)):
            run_auto_complete(model_class, config)
    finally:
        imported.unload()


def _latest_version_dir(model_dir: Path, filename: str) -> Path | None:
    versions = [
        child
        for child in model_dir.iterdir()
        if child.is_dir() and child.name.isdigit() and (child / filename).is_file()
    ]
    return max(versions, key=lambda child: int(child.name)) if versions else None


def _model_class(imported: ImportedModel, model_file: Path) -> type:
    model_class = getattr(imported.module, "TritonPythonModel", None)
    if not isinstance(model_class, type):
        raise ModelLoadError(
            f"{model_file} defines no class 'TritonPythonModel': a Python model's class must "
            "have that name"
        )
    return model_class


class PythonModelInstance(ModelInstance):
    """One instance of a Python model: its own import of model.py and its own model object."""

    def __init__(self, context: InstanceContext) -> None:
        self._context = context
        config = context.config
        model_file = context.version_dir / (config.default_model_filename or DEFAULT_MODEL_FILENAME)
        self._search_dirs = [context.version_dir, context.model_dir]
        self._imported = import_model_file(
            model_file, context.model_name, context.model_version, self._search_dirs, context
        )
        self._output_names = [output.name for output in config.output]
        self._tasks: set[asyncio.Task[None]] = set()
        self.decoupled = config.model_transaction_policy.decoupled
        # Inline runs on the server's thread: not for GPU instances (the current CUDA device is
        # per thread) nor for decoupled models (they may keep sending from execute). Inline
        # batches of models whose sources name a server call run in a greenlet, so that the
        # call suspends them (inline.py); the scope has the runner from the start, for the
        # threads a model starts in initialize too.
        self._inline: InlineRunner[list[RuntimeResponse] | None] | None = None
        if not self.decoupled and context.kind == "CPU" and context.loop is not None:
            self._inline = InlineRunner(
                self._execute_sync,
                context.loop,
                self._stop_inline,
                suspends=sources_name_server_calls(context.model_dir),
            )
        self._scope = ModelScope(context, self._imported.importer, self._inline)
        try:
            model_class = _model_class(self._imported, model_file)
            with entered(self._scope):
                self._model = self._call_model(model_class, "TritonPythonModel()")
            execute = getattr(self._model, "execute", None)
            if execute is None:
                raise ModelLoadError(
                    f"Python model {model_file} does not implement `execute` method."
                )
            self._execute = execute
            self.is_async = inspect.iscoroutinefunction(execute)
            self.may_run_inline = self._inline is not None and not self.is_async
            if self.may_run_inline:
                self.execute_inline = self._inline.run  # type: ignore[union-attr]
            # A Python model holds the GIL for most of its execution, so its thread runs little
            # in parallel with the event loop, and every hand-off of the GIL between the two can
            # cost milliseconds under load: batches of a few milliseconds still run inline.
            self.inline_threshold_ns = PYTHON_INLINE_THRESHOLD_NS
            initialize = getattr(self._model, "initialize", None)
            if initialize is not None:
                with entered(self._scope):
                    result = self._call_model(initialize, "initialize()", self._initialize_args())
                if inspect.isawaitable(result):
                    self._run_coroutine(result, "initialize()")
            if self._inline is not None:
                self._inline.armed = True
        except BaseException:
            self._imported.unload()
            raise

    def _initialize_args(self) -> dict[str, str]:
        context = self._context
        return {
            "model_config": context.config_json or config_to_json(context.config),
            "model_instance_kind": context.kind,
            "model_instance_name": context.instance_name,
            "model_instance_device_id": str(context.device_id),
            "model_repository": str(context.model_dir),
            "model_version": str(context.model_version),
            "model_name": context.model_name,
        }

    def _call_model(self, function: Any, what: str, *args: Any) -> Any:
        try:
            return function(*args)
        except BaseException as exc:  # SystemExit too: a load failure, never a server exit
            raise ModelLoadError(
                f"{what} of Python model '{self._context.model_name}' failed: "
                f"{describe_exception(exc, self._search_dirs)}"
            ) from exc

    def _run_coroutine(self, coroutine: Any, what: str) -> Any:
        """Run an `async def initialize/finalize` to completion from this (non-loop) thread, on
        the server's loop when it runs, so the model's later async work shares that loop."""
        scope = self._scope

        async def scoped() -> Any:
            with entered(scope):
                return await coroutine

        loop = self._context.loop
        try:
            if loop is not None and loop.is_running():
                return asyncio.run_coroutine_threadsafe(scoped(), loop).result()
            return asyncio.run(scoped())
        except BaseException as exc:
            raise ModelLoadError(
                f"{what} of Python model '{self._context.model_name}' failed: "
                f"{describe_exception(exc, self._search_dirs)}"
            ) from exc

    # ------------------------------------------------------------------------- execute

    def execute(
        self, requests: list[RuntimeRequest], timing: ComputeTiming
    ) -> list[RuntimeResponse] | Coroutine[Any, Any, list[RuntimeResponse] | None] | None:
        if self.is_async:
            return self._execute_async(requests, timing)
        inline = self._inline  # (the core runs inline batches through `execute_inline`)
        if inline is not None and inline.has_handed_over():
            return inline.finish(requests, timing)  # a batch an inline run handed over
        return self._execute_sync(requests, timing)

    def _execute_sync(
        self, requests: list[RuntimeRequest], timing: ComputeTiming
    ) -> list[RuntimeResponse] | None:
        """One batch of a synchronous `execute`, on the instance's thread or, inline, in its
        runner's greenlet."""
        model_requests = self._wrap(requests)
        timing.input_end_ns = time.monotonic_ns()
        token = enter(self._scope)
        try:
            result = self._execute(model_requests)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: an error response
            raise self._failure(exc) from exc
        finally:
            leave(token)
        timing.output_start_ns = time.monotonic_ns()
        return self._collect(result, model_requests)

    async def _execute_async(
        self, requests: list[RuntimeRequest], timing: ComputeTiming
    ) -> list[RuntimeResponse] | None:
        model_requests = self._wrap(requests)
        timing.input_end_ns = time.monotonic_ns()
        if self.decoupled:
            task = asyncio.get_running_loop().create_task(self._run_decoupled(model_requests))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return None
        with entered(self._scope):
            try:
                result = await self._execute(model_requests)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # SystemExit too: an error response, not a server exit
                raise self._failure(exc) from exc
        timing.output_start_ns = time.monotonic_ns()
        return self._collect(result, model_requests)

    async def _run_decoupled(self, model_requests: list[InferenceRequest]) -> None:
        """One batch of a decoupled `async def execute`; failures end the open requests."""
        with entered(self._scope):
            try:
                result = await self._execute(model_requests)
                if result is not None:
                    raise self._not_none_error()
            except asyncio.CancelledError:
                error = UnavailableError(f"model '{self._context.model_name}' was unloaded")
                for request in model_requests:
                    request._end_with(error)
                raise
            except BaseException as exc:
                failure = exc if isinstance(exc, ModelExecutionError) else self._failure(exc)
                logger.error("%s", failure.message)
                for request in model_requests:
                    request._end_with(failure)

    def _stop_inline(self) -> None:
        """The model called the server: from now on it runs on its own thread (the core reads
        this before it moves an instance onto the loop)."""
        self.may_run_inline = False

    def _wrap(self, requests: list[RuntimeRequest]) -> list[InferenceRequest]:
        return [
            InferenceRequest._from_server(request, self._output_names, self.decoupled)
            for request in requests
        ]

    def _collect(
        self, result: Any, model_requests: list[InferenceRequest]
    ) -> list[RuntimeResponse] | None:
        """Check what `execute` returned and turn it into the server's responses."""
        if self.decoupled:
            if result is not None:
                raise self._not_none_error()
            return None
        if result is None:
            # Responses went (or go) through response senders; a request whose sender the model
            # never took would otherwise wait forever.
            for request in model_requests:
                if request._sender is None:
                    request._end_with(
                        ModelExecutionError(
                            f"model '{self._context.model_name}' returned None from execute "
                            "without sending a response for a request: return a list with one "
                            "InferenceResponse per request"
                        )
                    )
            return None
        if not isinstance(result, (list, tuple)):
            raise ModelExecutionError(
                f"Failed to process the request(s) for model '{self._context.instance_name}', "
                f"message: Expected a list in the execute return, found type "
                f"'{type(result).__name__}'."
            )
        if len(result) != len(model_requests):
            raise ModelExecutionError(
                f"Failed to process the request(s) for model '{self._context.instance_name}', "
                "message: Number of InferenceResponse objects do not match the number of "
                f"InferenceRequest objects. InferenceRequest(s) size is:{len(model_requests)}, "
                f"and InferenceResponse(s) size is:{len(result)}"
            )
        responses = []
        for response in result:
            if not isinstance(response, InferenceResponse):
                raise ModelExecutionError(
                    f"Failed to process the request(s) for model "
                    f"'{self._context.instance_name}', message: Expected an 'InferenceResponse' "
                    f"object in the execute function return list, found type "
                    f"'{type(response).__name__}'."
                )
            responses.append(response._to_server())
        return responses

    def _failure(self, exc: BaseException) -> ModelExecutionError:
        message = (
            f"Failed to process the request(s) for model '{self._context.instance_name}', "
            f"message: {describe_exception(exc, self._search_dirs)}"
        )
        logger.debug("%s", message, exc_info=exc)
        return ModelExecutionError(message)

    def _not_none_error(self) -> ModelExecutionError:
        return ModelExecutionError(
            f"Python model '{self._context.instance_name}' is using the decoupled mode and the "
            "execute function must return None."
        )

    # ------------------------------------------------------------------------- unload

    def close(self) -> None:
        """Let running decoupled batches finish, call `finalize()`, forget the model's modules."""
        try:
            self._drain_tasks()
            finalize = getattr(self._model, "finalize", None)
            if finalize is not None:
                with entered(self._scope):
                    result = self._call_model(finalize, "finalize()")
                if inspect.isawaitable(result):
                    self._run_coroutine(result, "finalize()")
        except ModelLoadError as exc:  # Triton logs a failing finalize and unloads anyway
            logger.error("%s", exc.message)
        finally:
            if self._inline is not None:
                self._inline.close()
            self._imported.unload()

    def _drain_tasks(self) -> None:
        loop = self._context.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return

        async def drain() -> None:
            tasks: Sequence[asyncio.Task[None]] = list(self._tasks)
            if not tasks:
                return
            _, pending = await asyncio.wait(tasks, timeout=_DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return  # cannot wait on the loop from the loop; the tasks end on their own
        asyncio.run_coroutine_threadsafe(drain(), loop).result()
