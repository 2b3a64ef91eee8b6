"""The backend contract: a few methods every framework backend implements.

A backend is looked up by name (backends/registry.py). For each model version the core calls
`auto_complete_config` once, then `create_instance` once per instance-group member. The core owns
scheduling; an instance only executes the batches it is handed.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest, InferenceResponse

#: Runs a request through the server (BLS, ensembles): the core hands this to backends at load
#: time, so backends never import the core.
InferCallable = Callable[[InferenceRequest], Coroutine[Any, Any, InferenceResponse]]
StreamInferCallable = Callable[[InferenceRequest], AsyncIterator[InferenceResponse]]


@dataclass(slots=True)
class ComputeTiming:
    """Monotonic ns marks a backend may set inside `execute` to split compute time into the
    input / infer / output phases that statistics report. Unset marks default to start / end."""

    input_end_ns: int = 0
    output_start_ns: int = 0


@dataclass
class InstanceContext:
    """Everything an instance needs to know about where and what it is."""

    config: mc.ModelConfig
    model_name: str
    model_version: int
    #: REPO/NAME: the model's folder (Triton's `model_repository` arg is this folder).
    model_dir: Path
    #: REPO/NAME/VERSION
    version_dir: Path
    instance_name: str
    #: "CPU" or "GPU" (Triton's `model_instance_kind` strings are "CPU"/"GPU"/"MODEL").
    kind: str = "CPU"
    device_id: int = 0
    instance_index: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    infer: InferCallable | None = None
    stream_infer: StreamInferCallable | None = None
    #: Model-config JSON as Triton renders it (what Python models get in args['model_config']).
    config_json: str = ""
    extras: dict[str, object] = field(default_factory=dict)


class MustRunOnWorkerThread(BaseException):
    """Raised by an inline execution that hands its batch over to the worker thread (a Python
    model waiting for a BLS call, an isolated model's batch still running): the core stops
    running this instance inline and calls `execute` on the thread with the same requests, which
    finishes the batch the inline call started. The instance must not execute the batch's model
    code a second time there.

    A BaseException, so that a model's own `except Exception` does not swallow it."""


class ModelInstance(ABC):
    """One instance-group member. The core never calls `execute` twice at once on one instance,
    unless it is async and asks for more (`concurrent_executions`)."""

    #: True when `execute` is a coroutine function: it then runs on the event loop; otherwise on
    #: the instance's own worker thread.
    is_async: bool = False
    #: How many batches the direct scheduler and the dynamic batcher may have running on this
    #: instance at once (async instances only; sequence batching always gives one). More than
    #: one lets an instance queue its next batch while one runs: an isolated Python model's
    #: process starts the next batch without waiting for the server to send it.
    concurrent_executions: int = 1
    #: Decoupled instances send their responses through each request's responder (any number,
    #: the last with final=True) and return None from execute.
    decoupled: bool = False
    #: A synchronous instance that may run directly on the event loop when its executions prove
    #: short (runtime/core/instances.py): saves the hand-off to its thread and back, the largest
    #: cost of a small request. Only for CPU instances without thread affinity.
    may_run_inline: bool = False
    #: How long executions may average (CPU time) and still run inline; None: the core's
    #: default (runtime/core/instances.py).
    inline_threshold_ns: int | None = None
    #: What the core calls instead of `execute` for a batch it runs inline (None: `execute`),
    #: so that an instance can tell the two apart without a check per batch.
    execute_inline: (
        Callable[[list[InFlightRequest], ComputeTiming], list[InferenceResponse] | None] | None
    ) = None

    @abstractmethod
    def execute(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[InferenceResponse] | Awaitable[list[InferenceResponse] | None] | None:
        """Run a batch. Return one response per request, in order (None when decoupled).

        A response carrying `error` fails only its own request; raising fails the whole batch.
        """

    def close(self) -> None:
        """Release the instance's resources (called on unload, off the event loop)."""


class Backend(ABC):
    """A framework integration, registered by name."""

    #: Config `backend` name, e.g. "onnxruntime", "python".
    name: str = ""
    #: Config `platform` names that select this backend, e.g. ("onnxruntime_onnx",).
    platforms: tuple[str, ...] = ()
    #: File a version folder holds when the config names none (`default_model_filename`).
    default_model_filename: str = ""
    #: Its decoupled models send exactly one response to a request that does not ask to
    #: stream, so unary calls (ModelInfer, /infer) are served instead of refused (llm).
    single_response_when_unary: bool = False

    def auto_complete_config(self, config: mc.ModelConfig, model_dir: Path, strict: bool) -> None:
        """Fill what the config leaves out (inputs, outputs, max_batch_size) from the model
        files, in place. With `strict`, only check that the config is complete."""

    def metrics_text(self) -> str:
        """Extra Prometheus text this backend exports (e.g. Python models' custom metrics)."""
        return ""

    @abstractmethod
    def create_instance(self, context: InstanceContext) -> ModelInstance:
        """Load one instance. Runs off the event loop; raise with a message that says what to
        fix when the model cannot load."""
