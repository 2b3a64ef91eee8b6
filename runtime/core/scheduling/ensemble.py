"""The ensemble scheduler: runs a pipeline of models (config `platform: "ensemble"`) as a graph of
steps, each one a request to a composing model through the data plane.

`EnsembleGraph` is the static part: it reads `ensemble_scheduling` and checks the data flow (every
tensor produced once, every step reachable from the ensemble inputs, no cycles, every ensemble
output written) and, once the composing models are loaded, their inputs, outputs, datatypes and
shapes. `EnsembleScheduler` runs requests: a step starts as soon as all its input tensors exist, so
independent steps run concurrently; tensors are routed by name; the first failing step fails the
request ("in ensemble 'ens', step 'model_a': <message>").

Composing models are called through the normal request path (`InferenceService.infer`), so they keep
their own statistics, batching, caching and validation. The ensemble's own statistics count each
ensemble request once, as Triton does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trident.runtime.errors import (
    FailureReason,
    InternalError,
    ModelLoadError,
    TridentError,
    UnavailableError,
)
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
)

from ..in_flight import InFlightRequest
from .base import Scheduler, cancelled_error

if TYPE_CHECKING:
    from trident.runtime.core.loaded_model import LoadedModel
    from trident.runtime.core.stats import ModelStats

#: Runs one request through the server (InferenceService.infer).
InferFunction = Callable[[InferenceRequest], Awaitable[InferenceResponse]]
#: Finds the loaded model serving (name, version); raises TridentError when there is none.
ModelLookup = Callable[[str, int], "LoadedModel"]

ENSEMBLE_PLATFORM = "ensemble"


@dataclass(frozen=True, slots=True)
class EnsembleStep:
    """One `ensemble_scheduling.step`: which model runs, on which tensors."""

    index: int
    model_name: str
    #: 0 means the composing model's latest ready version (the config's -1).
    model_version: int
    #: (composing-model input name, ensemble tensor name) pairs.
    input_map: tuple[tuple[str, str], ...]
    #: (composing-model output name, ensemble tensor name) pairs.
    output_map: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        return f"step {self.index} (model '{self.model_name}')"

    @property
    def consumes(self) -> frozenset[str]:
        return frozenset(tensor for _, tensor in self.input_map)

    @property
    def produces(self) -> frozenset[str]:
        return frozenset(tensor for _, tensor in self.output_map)


@dataclass(frozen=True, slots=True)
class _TensorInfo:
    """What one side (the ensemble or a composing model) says an ensemble tensor looks like."""

    source: str
    data_type: int
    dims: tuple[int, ...]
    batching: bool

    @property
    def full_dims(self) -> tuple[int, ...]:
        return (-1, *self.dims) if self.batching else self.dims


def _dims_agree(left: tuple[int, ...], right: tuple[int, ...]) -> bool:
    if len(left) != len(right):
        return False
    return all(a == -1 or b == -1 or a == b for a, b in zip(left, right))


class EnsembleGraph:
    """The validated data flow of one ensemble config."""

    def __init__(
        self,
        name: str,
        steps: list[EnsembleStep],
        inputs: tuple[str, ...],
        outputs: tuple[str, ...],
        optional_inputs: frozenset[str],
    ) -> None:
        self.name = name
        self.steps = steps
        self.inputs = inputs
        self.outputs = outputs
        self.optional_inputs = optional_inputs
        #: ensemble tensor -> index of the step producing it.
        self.producer: dict[str, int] = {}
        for step in steps:
            for tensor in step.produces:
                self.producer[tensor] = step.index
        self._needed_cache: dict[frozenset[str], frozenset[int]] = {}

    # ------------------------------------------------------------------ building and checking

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> EnsembleGraph:
        """Read and check `ensemble_scheduling`; raise ModelLoadError saying what to fix."""
        where = f"ensemble '{config.name}'"
        if not config.HasField("ensemble_scheduling") or not config.ensemble_scheduling.step:
            raise ModelLoadError(
                f"must specify 'step' for {where}: an ensemble needs "
                "ensemble_scheduling { step [ { model_name ... input_map ... output_map ... } ] }"
            )
        if config.model_warmup:
            raise ModelLoadError(f"model_warmup can not be specified for {where}")
        if config.HasField("optimization"):
            raise ModelLoadError(f"optimization should not be specified for {where}")
        steps = []
        for index, raw in enumerate(config.ensemble_scheduling.step):
            if not raw.model_name:
                raise ModelLoadError(f"must specify 'model_name' in step {index} of {where}")
            if not raw.input_map:
                raise ModelLoadError(f"must specify 'input_map' in step {index} of {where}")
            if not raw.output_map:
                raise ModelLoadError(f"must specify 'output_map' in step {index} of {where}")
            steps.append(
                EnsembleStep(
                    index=index,
                    model_name=raw.model_name,
                    model_version=max(int(raw.model_version), 0),
                    input_map=tuple(sorted(raw.input_map.items())),
                    output_map=tuple(sorted(raw.output_map.items())),
                )
            )
        graph = cls(
            config.name,
            steps,
            tuple(tensor.name for tensor in config.input),
            tuple(tensor.name for tensor in config.output),
            frozenset(tensor.name for tensor in config.input if tensor.optional),
        )
        graph._check_data_flow()
        return graph

    def _check_data_flow(self) -> None:
        where = f"ensemble '{self.name}'"
        producer: dict[str, EnsembleStep] = {}
        for step in self.steps:
            for _, tensor in step.output_map:
                if tensor in producer:
                    raise ModelLoadError(
                        f"in {where}, ensemble tensor '{tensor}' is written by both "
                        f"{producer[tensor].label} and {step.label}: a tensor can appear in an "
                        "output_map only once"
                    )
                if tensor in self.inputs:
                    raise ModelLoadError(
                        f"in {where}, {step.label} writes ensemble tensor '{tensor}', which is "
                        "an input of the ensemble"
                    )
                producer[tensor] = step
        consumed: set[str] = set()
        for step in self.steps:
            for _, tensor in step.input_map:
                consumed.add(tensor)
                if tensor not in producer and tensor not in self.inputs:
                    raise ModelLoadError(
                        f"in {where}, {step.label} reads ensemble tensor '{tensor}', which is "
                        "neither an ensemble input nor written by any step"
                    )
        for name in self.inputs:
            if name not in consumed:
                raise ModelLoadError(
                    f"ensemble input '{name}' of {where} is not used by any step: map it in a "
                    "step's input_map or remove it from the ensemble's inputs"
                )
        for name in self.outputs:
            if name not in producer:
                raise ModelLoadError(
                    f"output '{name}' of {where} is not written by any step: map a composing "
                    "model's output to it in a step's output_map"
                )
        for tensor, step in producer.items():
            if tensor not in consumed and tensor not in self.outputs:
                raise ModelLoadError(
                    f"ensemble tensor '{tensor}' (written by {step.label}) is unused in {where}: "
                    "read it in a later step or make it an ensemble output"
                )
        # Kahn's algorithm over steps; what never becomes runnable sits on a cycle.
        available = set(self.inputs)
        remaining = list(self.steps)
        while True:
            runnable = [s for s in remaining if s.consumes <= available]
            if not runnable:
                break
            for step in runnable:
                available |= step.produces
                remaining.remove(step)
        if remaining:
            stuck = ", ".join(s.label for s in remaining)
            raise ModelLoadError(
                f"in {where}, these steps wait on each other's outputs and can never run (a "
                f"cycle in the ensemble graph): {stuck}"
            )

    def composing_models(self) -> list[str]:
        """Names of the models the steps call, in step order, without repeats."""
        return list(dict.fromkeys(step.model_name for step in self.steps))

    def check_composing_models(self, config: mc.ModelConfig, lookup: ModelLookup) -> None:
        """Check the steps against the loaded composing models' configs (names, datatypes,
        shapes, batch sizes), as Triton does once an ensemble's dependencies are loaded."""
        where = f"ensemble '{self.name}'"
        ensemble_batching = config.max_batch_size > 0
        infos: dict[str, _TensorInfo] = {}
        for tensor in list(config.input) + list(config.output):
            dims = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else tuple(tensor.dims)
            infos[tensor.name] = _TensorInfo(
                f"ensemble '{self.name}'", tensor.data_type, dims, ensemble_batching
            )
        for step in self.steps:
            try:
                model = lookup(step.model_name, step.model_version)
            except TridentError as exc:
                raise ModelLoadError(
                    f"in {where}, {step.label}: composing model is not available: {exc}"
                ) from None
            composing = model.config
            if composing.model_transaction_policy.decoupled:
                raise ModelLoadError(
                    f"in {where}, {step.label}: the model is decoupled; Trident's ensembles do "
                    "not support decoupled composing models yet"
                )
            if composing.max_batch_size and composing.max_batch_size < config.max_batch_size:
                raise ModelLoadError(
                    f"{where} allows maximum batch size {config.max_batch_size}, but it contains "
                    f"model '{step.model_name}' which only allows maximum batch size to be "
                    f"{composing.max_batch_size}"
                )
            self._check_step_mapping(step, composing, infos)

    def _check_step_mapping(
        self, step: EnsembleStep, composing: mc.ModelConfig, infos: dict[str, _TensorInfo]
    ) -> None:
        where = f"in ensemble '{self.name}', {step.label}"
        batching = composing.max_batch_size > 0
        inputs = {tensor.name: tensor for tensor in composing.input}
        outputs = {tensor.name: tensor for tensor in composing.output}
        mapped_inputs = {model_input for model_input, _ in step.input_map}
        for model_input, tensor in step.input_map:
            if model_input not in inputs:
                raise ModelLoadError(
                    f"{where}: input_map maps ensemble tensor '{tensor}' to input "
                    f"'{model_input}', which the model does not have (its inputs: "
                    f"{', '.join(inputs) or 'none'})"
                )
        for name, tensor in inputs.items():
            if name not in mapped_inputs and not tensor.optional:
                raise ModelLoadError(
                    f"{where}: the model's input '{name}' is not mapped to any ensemble tensor "
                    "in the step's input_map"
                )
        for model_output, tensor in step.output_map:
            if model_output not in outputs:
                raise ModelLoadError(
                    f"{where}: output_map maps output '{model_output}' to ensemble tensor "
                    f"'{tensor}', but the model has no such output (its outputs: "
                    f"{', '.join(outputs) or 'none'})"
                )
        pairs = [(inputs[m], t) for m, t in step.input_map] + [
            (outputs[m], t) for m, t in step.output_map
        ]
        for declared, tensor in pairs:
            info = _TensorInfo(
                f"model '{step.model_name}'", declared.data_type, tuple(declared.dims), batching
            )
            known = infos.setdefault(tensor, info)
            if known is info:
                continue
            if known.data_type != info.data_type:
                raise ModelLoadError(
                    f"in ensemble '{self.name}', ensemble tensor '{tensor}': inconsistent data "
                    f"type: {mc.DataType.Name(known.data_type)} is inferred from {known.source} "
                    f"while {mc.DataType.Name(info.data_type)} is inferred from {info.source}"
                )
            if not _dims_agree(known.dims, info.dims) and not _dims_agree(
                known.full_dims, info.full_dims
            ):
                raise ModelLoadError(
                    f"in ensemble '{self.name}', ensemble tensor '{tensor}': inconsistent "
                    f"shape: {list(known.full_dims)} is inferred from {known.source} while "
                    f"{list(info.full_dims)} is inferred from {info.source}"
                )

    # ------------------------------------------------------------------ per request

    def steps_needed(self, requested: frozenset[str]) -> frozenset[int]:
        """The steps that must run to produce `requested` ensemble outputs (all steps when the
        client asked for every output): Triton prunes the others."""
        cached = self._needed_cache.get(requested)
        if cached is not None:
            return cached
        needed: set[int] = set()
        pending = list(requested)
        while pending:
            tensor = pending.pop()
            index = self.producer.get(tensor)
            if index is None or index in needed:
                continue
            needed.add(index)
            pending.extend(self.steps[index].consumes)
        result = frozenset(needed)
        if len(self._needed_cache) < 64:  # requests name few distinct output sets
            self._needed_cache[requested] = result
        return result


@dataclass(frozen=True, slots=True)
class EnsembleBinding:
    """What a loaded ensemble needs to run: its graph, and how to reach the composing models."""

    graph: EnsembleGraph
    infer: InferFunction
    lookup: ModelLookup


@dataclass(slots=True)
class _Value:
    """An ensemble tensor during one request; `batched` says its first dim is a batch dim."""

    tensor: Tensor | None
    batched: bool


class EnsembleScheduler(Scheduler):
    """Runs each ensemble request as asyncio tasks, one per step, on the server's event loop."""

    def __init__(
        self,
        graph: EnsembleGraph,
        stats: ModelStats,
        infer: InferFunction,
        lookup: ModelLookup,
        batched: bool,
    ) -> None:
        self._graph = graph
        self._stats = stats
        self._infer = infer
        self._lookup = lookup
        self._batched = batched
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False

    @classmethod
    def for_model(cls, model: LoadedModel) -> EnsembleScheduler:
        binding = model.ensemble
        assert binding is not None, "for_model needs a loaded ensemble"
        return cls(
            binding.graph, model.stats, binding.infer, binding.lookup, model.max_batch_size > 0
        )

    def submit(self, request: InFlightRequest) -> None:
        if self._stopping:
            raise UnavailableError(f"model '{self._graph.name}' is unloading")
        task = asyncio.get_running_loop().create_task(self._run(request))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, request: InFlightRequest) -> None:
        start = time.monotonic_ns()
        if request.cancellation.cancelled:
            self._stats.record_failure(FailureReason.CANCELED, request.arrival_ns, start)
            request.responder.fail(cancelled_error(request))
            return
        try:
            values = await self._execute(request)
        except TridentError as error:
            # Triton reports every failed ensemble request with reason OTHER.
            self._stats.record_failure(FailureReason.OTHER, request.arrival_ns, time.monotonic_ns())
            request.responder.fail(error)
            return
        except Exception as exc:  # a bug here must fail the request, not hang it
            self._stats.record_failure(FailureReason.OTHER, request.arrival_ns, time.monotonic_ns())
            request.responder.fail(
                InternalError(f"in ensemble '{self._graph.name}': {type(exc).__name__}: {exc}")
            )
            return
        outputs = []
        for name in self._graph.outputs:
            value = values.get(name)
            if value is not None and value.tensor is not None:
                tensor = value.tensor
                outputs.append(Tensor(name, tensor.datatype, tensor.shape, tensor.data))
        end = time.monotonic_ns()
        stats = self._stats
        # Composing models time their own compute; the ensemble reports its whole run as
        # compute_infer (Triton sums the composing models' phases instead).
        stats.record_execution(self._batch_size(request), start, start, end, end)
        stats.record_success(request.arrival_ns, start, start, start, end, end)
        request.responder.send(InferenceResponse(outputs=outputs))

    def _batch_size(self, request: InFlightRequest) -> int:
        if not self._batched or not request.inputs:
            return 1
        shape = request.inputs[0].shape
        return shape[0] if shape else 1

    async def _execute(self, request: InFlightRequest) -> dict[str, _Value]:
        graph = self._graph
        values: dict[str, _Value] = {}
        for tensor in request.inputs:
            values[tensor.name] = _Value(tensor, self._batched)
        for name in graph.optional_inputs:
            values.setdefault(name, _Value(None, self._batched))
        if request.outputs:
            requested = frozenset(output.name for output in request.outputs)
            needed = graph.steps_needed(requested)
        else:
            needed = frozenset(range(len(graph.steps)))
        pending = [graph.steps[index] for index in sorted(needed)]
        running: dict[asyncio.Task[dict[str, _Value]], EnsembleStep] = {}
        failure: TridentError | None = None

        def launch_ready() -> None:
            for step in list(pending):
                if step.consumes <= values.keys():
                    pending.remove(step)
                    task = asyncio.get_running_loop().create_task(
                        self._run_step(step, request, values)
                    )
                    running[task] = step

        launch_ready()
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                step = running.pop(task)
                try:
                    values.update(task.result())
                except TridentError as error:
                    if failure is None:
                        failure = _step_error(graph.name, step, error)
                except Exception as exc:  # a bug must fail the request, not strand the others
                    if failure is None:
                        failure = _step_error(
                            graph.name, step, InternalError(f"{type(exc).__name__}: {exc}")
                        )
            # After a failure no new step starts; the running ones finish before we answer, so
            # a stopping scheduler never leaves steps behind.
            if failure is None:
                launch_ready()
        if failure is not None:
            raise failure
        if pending:
            raise InternalError(
                f"in ensemble '{graph.name}', unexpected deadlock: "
                + ", ".join(s.label for s in pending)
                + " can never run because an input tensor was not produced"
            )
        return values

    async def _run_step(
        self, step: EnsembleStep, request: InFlightRequest, values: dict[str, _Value]
    ) -> dict[str, _Value]:
        target = self._target(step)
        inputs = []
        for model_input, tensor_name in step.input_map:
            value = values[tensor_name]
            if value.tensor is None:
                continue  # an optional input the client left out, or a step did not produce
            inputs.append(_as_step_input(model_input, value, target))
        sub_request = InferenceRequest(
            model_name=step.model_name,
            model_version=step.model_version,
            id=request.id,
            inputs=inputs,
            outputs=[RequestedOutput(model_output) for model_output, _ in step.output_map],
            parameters=dict(request.parameters),
            priority=request.priority,
            timeout_us=request.timeout_us,
            sequence_id=request.sequence_id,
            sequence_start=request.sequence_start,
            sequence_end=request.sequence_end,
            cancellation=request.cancellation,
        )
        if request.trace is not None:  # the step is traced too, as a child of the ensemble's
            sub_request.trace = request.trace.child(step.model_name)
        response = await self._infer(sub_request)
        produced = {tensor.name: tensor for tensor in response.outputs}
        batched = target is not None and target.max_batch_size > 0
        return {
            tensor_name: _Value(produced.get(model_output), batched)
            for model_output, tensor_name in step.output_map
        }

    def _target(self, step: EnsembleStep) -> LoadedModel | None:
        try:
            return self._lookup(step.model_name, step.model_version)
        except TridentError:
            return None  # the step's own request reports the missing model

    async def stop(self) -> None:
        self._stopping = True
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _as_step_input(name: str, value: _Value, target: LoadedModel | None) -> Tensor:
    """The ensemble tensor renamed for a composing model's input, with the batch dim added or
    dropped when a tensor moves between batching and non-batching models (Triton's rule)."""
    tensor = value.tensor
    assert tensor is not None
    shape = tensor.shape
    if target is not None:
        spec = target.input_specs.get(name)
        target_batching = target.max_batch_size > 0
        if spec is not None and target_batching != value.batched:
            if target_batching and _dims_agree(spec.dims, shape):
                shape = (1, *shape)
            elif (
                not target_batching
                and shape
                and shape[0] == 1
                and not _dims_agree(spec.dims, shape)
            ):
                shape = shape[1:]
    data = tensor.data
    if shape != tensor.shape and data is not None:
        data = data.reshape(shape)
    return Tensor(name, tensor.datatype, shape, data)


def _step_error(ensemble: str, step: EnsembleStep, error: TridentError) -> TridentError:
    """The step's error, same kind (so HTTP status and gRPC code carry over), naming the step."""
    message = f"in ensemble '{ensemble}', step '{step.model_name}': {error.message}"
    try:
        wrapped = type(error)(message)
    except TypeError:  # an error class with another constructor: keep its status, say why
        wrapped = InternalError(message)
        wrapped.http_status = error.http_status
        wrapped.grpc_code = error.grpc_code
    return wrapped
