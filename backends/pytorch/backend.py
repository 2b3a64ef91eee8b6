"""PyTorch: TorchScript files (model.pt, platform pytorch_libtorch) and `torch.export` programs
(model.pt2, platform torch_export).

Files are read with `torch.jit.load` and `torch.export.load` only, never with a pickle-based
loader, so a model file cannot run arbitrary Python on load.

Inputs and outputs map to the model by Triton's naming conventions (naming.py): `forward()`'s
argument names, or `INPUT__<n>` / `OUTPUT__<n>` positions, or the config's order. A model.pt2
fills the config by itself (names, data types, dims, and a batch dimension when its first
dimension is dynamic); TorchScript records no types or shapes, so its config.pbtxt must declare
the inputs and outputs (the load error says which, with forward()'s argument names).

Each instance runs on its own device: the CPU for KIND_CPU, `cuda:<device_id>` for KIND_GPU.

Config `parameters` (string values):
- `INFERENCE_MODE` (default "true"): run under torch.inference_mode(); "false" uses
  torch.no_grad() instead (for models that need autograd-tracked tensors).
- `DISABLE_OPTIMIZED_EXECUTION` (default "false"): TorchScript only; turns off the profiling
  executor's optimizations (a slow first few calls are the usual reason).
- `INTRA_OP_THREAD_COUNT`, `INTER_OP_THREAD_COUNT`: torch's thread pools. They are process-wide,
  so the last model loaded with them wins.
- `HALF_PRECISION` (default "false"): convert the model's weights to float16 and its floating
  point inputs too; floating outputs are converted back to the config's data type, so a config
  can keep declaring TYPE_FP32.
- `TORCH_COMPILE` (default "false"): wrap a model.pt2 program in torch.compile (TorchScript
  modules cannot be compiled); `TORCH_COMPILE_MODE` (e.g. "reduce-overhead", "max-autotune";
  default torch's) and `TORCH_COMPILE_BACKEND` (default "inductor"). Compilation happens on the
  first requests of each new shape.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trident.backends.base import Backend, ComputeTiming, InstanceContext, ModelInstance
from trident.backends.batching import (
    Batch,
    BatchResponses,
    form_batches,
    output_specs,
)
from trident.backends.model_signature import (
    DEFAULT_MAX_BATCH_SIZE,
    auto_complete,
    check_config,
    find_model_file,
    type_name,
)
from trident.backends.parameters import bool_parameter, int_parameter, model_parameters
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import ModelExecutionError, ModelLoadError, TridentError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceResponse

from .naming import DICT_KEY, FORWARD_ARGUMENT, Binding, bind_inputs, bind_outputs
from .signature import (
    CONFIG_TO_TORCH,
    align_signature,
    export_input_names,
    export_output_keys,
    export_signature,
    forward_arguments,
    load_export,
    load_torchscript,
    read_export_signature,
)

logger = logging.getLogger(__name__)

# Request inputs often arrive as read-only views of the received bytes; torch shares them
# without copying (inference never writes its inputs) and would warn about each such array.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

TORCHSCRIPT_FILENAME = "model.pt"
EXPORT_FILENAME = "model.pt2"
EXPORT_PLATFORM = "torch_export"
TORCHSCRIPT_PLATFORM = "pytorch_libtorch"


def is_export_file(filename: str) -> bool:
    return filename.endswith(".pt2")


class PyTorchBackend(Backend):
    name = "pytorch"
    platforms = (TORCHSCRIPT_PLATFORM, EXPORT_PLATFORM)
    default_model_filename = TORCHSCRIPT_FILENAME

    def __init__(self, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> None:
        self.default_max_batch_size = default_max_batch_size

    def auto_complete_config(self, config: mc.ModelConfig, model_dir: Path, strict: bool) -> None:
        _select_model_file(config, model_dir)
        if is_export_file(config.default_model_filename):
            auto_complete(
                config,
                model_dir,
                strict,
                EXPORT_FILENAME,
                read_export_signature,
                self.default_max_batch_size,
                align=align_signature,
            )
            return
        if config.input and config.output:
            return  # instances check the names against forward() on load
        filename = config.default_model_filename or TORCHSCRIPT_FILENAME
        path = find_model_file(model_dir, config, filename)
        arguments = None
        if path is not None:
            arguments = [name for name, _ in forward_arguments(load_torchscript(path, _CPU))]
        raise ModelLoadError(_torchscript_needs_config(config, arguments))

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return PyTorchInstance(context)


_CPU = torch.device("cpu")


def _select_model_file(config: mc.ModelConfig, model_dir: Path) -> None:
    """Serve model.pt2 when that is what the version folders hold and the config names no
    other file, and report the platform that matches the file."""
    if config.default_model_filename in ("", TORCHSCRIPT_FILENAME):
        has_script = find_model_file(model_dir, config, TORCHSCRIPT_FILENAME) is not None
        has_export = find_model_file(model_dir, config, EXPORT_FILENAME) is not None
        config.default_model_filename = (
            EXPORT_FILENAME if has_export and not has_script else TORCHSCRIPT_FILENAME
        )
    if is_export_file(config.default_model_filename) and config.platform in (
        "",
        TORCHSCRIPT_PLATFORM,
    ):
        config.platform = EXPORT_PLATFORM


def _torchscript_needs_config(config: mc.ModelConfig, arguments: list[str] | None) -> str:
    missing = [
        kind for kind, items in (("inputs", config.input), ("outputs", config.output)) if not items
    ]
    forward = f"forward({', '.join(arguments)})" if arguments is not None else "forward()"
    example_inputs = ", ".join(
        f'{{ name: "{name}" data_type: TYPE_FP32 dims: [ ... ] }}' for name in arguments or []
    )
    message = (
        f"model '{config.name}': {config.default_model_filename or TORCHSCRIPT_FILENAME} is "
        "TorchScript, which records no data types or shapes, so config.pbtxt must declare the "
        f"model's {' and '.join(missing)} (name, data_type, dims), and max_batch_size when the "
        "first dimension is a batch dimension"
    )
    if "inputs" in missing:
        message += (
            f"; inputs are named after the arguments of {forward} or INPUT__0, INPUT__1, ...: "
            f"input [ {example_inputs or '...'} ]"
        )
    if "outputs" in missing:
        message += (
            "; outputs are OUTPUT__0, OUTPUT__1, ... in the order forward() returns them: output "
            '[ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ ... ] } ]'
        )
    return message


class PyTorchInstance(ModelInstance):
    """One loaded module on one device."""

    def __init__(self, context: InstanceContext) -> None:
        config = context.config
        self._model_name = context.model_name
        # Short CPU executions may run on the event loop (runtime/core/instances.py).
        self.may_run_inline = context.kind == "CPU"
        self._version = context.model_version
        self._batched = config.max_batch_size > 0
        self._device = _device(context)
        params = model_parameters(config)
        self._inference_mode = bool_parameter(params, "INFERENCE_MODE", True)
        self._half = bool_parameter(params, "HALF_PRECISION", False)
        _set_thread_counts(params)
        for tensor in [*config.input, *config.output]:
            if tensor.data_type not in CONFIG_TO_TORCH:
                raise ModelLoadError(
                    f"'{tensor.name}' is {type_name(tensor.data_type)}, which torch tensors "
                    "cannot hold"
                )
        filename = config.default_model_filename or TORCHSCRIPT_FILENAME
        path = context.version_dir / filename
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        input_names = [t.name for t in config.input]
        output_names = [t.name for t in config.output]
        self._optimized = True
        self._keyword_call = False
        if is_export_file(filename):
            program = load_export(path)
            check_config(config, align_signature(config, export_signature(program, path.name)))
            self._inputs = bind_inputs(input_names, export_input_names(program))
            self._outputs = bind_outputs(output_names, export_output_keys(program))
            self._module: Any = _exported_module(program, self._device)
        else:
            module = load_torchscript(path, self._device)
            arguments = forward_arguments(module)
            self._inputs = bind_inputs(input_names, [name for name, _ in arguments])
            _check_forward_arguments(config, self._inputs, arguments, path.name)
            self._outputs = bind_outputs(output_names, None)
            module.eval()
            self._module = module
            self._optimized = not bool_parameter(params, "DISABLE_OPTIMIZED_EXECUTION", False)
            # TorchScript methods take keyword arguments, which skips arguments with defaults.
            self._keyword_call = self._inputs.convention == FORWARD_ARGUMENT
        if self._half:
            self._module = self._module.half()
        if bool_parameter(params, "TORCH_COMPILE", False):
            self._module = _compile(self._module, params, filename)
        self._input_types = {t.name: CONFIG_TO_TORCH[t.data_type] for t in config.input}
        self._output_types = {t.name: CONFIG_TO_TORCH[t.data_type] for t in config.output}
        self._output_config_types = {t.name: t.data_type for t in config.output}
        self._specs = output_specs(config)

    def execute(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[InferenceResponse]:
        responses = BatchResponses(
            requests, self._specs, self._model_name, self._version, self._batched
        )
        with self._grad_mode():
            staged: list[tuple[Batch, dict[str, torch.Tensor]]] = []
            for batch in form_batches(requests, self._batched):
                try:
                    staged.append((batch, self._to_torch(batch.inputs)))
                except TridentError as error:
                    responses.fail(batch, error)
            timing.input_end_ns = time.monotonic_ns()
            computed: list[tuple[Batch, dict[str, torch.Tensor]]] = []
            for batch, tensors in staged:
                try:
                    computed.append((batch, self._bind_results(self._call(tensors))))
                except TridentError as error:
                    responses.fail(batch, error)
                except Exception as exc:  # the model's own code raised
                    raised = ModelExecutionError(f"the PyTorch model raised {_describe(exc)}")
                    responses.fail(batch, raised)
            timing.output_start_ns = time.monotonic_ns()
            for batch, results in computed:
                try:
                    arrays = {name: self._to_numpy(name, t) for name, t in results.items()}
                except TridentError as error:
                    responses.fail(batch, error)
                    continue
                responses.respond(batch, arrays)
        return responses.result()

    @contextlib.contextmanager
    def _grad_mode(self) -> Iterator[None]:
        grad = torch.inference_mode() if self._inference_mode else torch.no_grad()
        with grad, torch.jit.optimized_execution(self._optimized):
            yield

    def _to_torch(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        tensors = {}
        for name, array in arrays.items():
            if self._input_types.get(name) is torch.bfloat16:
                # BF16 travels as raw uint16 words.
                tensor = torch.from_numpy(np.ascontiguousarray(array).view(np.int16))
                tensor = tensor.view(torch.bfloat16)
            else:
                if any(stride < 0 for stride in array.strides):
                    array = np.ascontiguousarray(array)  # torch cannot view negative strides
                tensor = torch.from_numpy(array)
            tensor = tensor.to(self._device, non_blocking=True)
            if self._half and tensor.is_floating_point():
                tensor = tensor.half()
            tensors[name] = tensor
        return tensors

    def _call(self, tensors: dict[str, torch.Tensor]) -> Any:
        if self._keyword_call:
            return self._module(**tensors)
        count = max(self._inputs.positions.values(), default=-1) + 1
        args: list[torch.Tensor | None] = [None] * count
        for name, tensor in tensors.items():
            args[self._inputs.position(name)] = tensor
        return self._module(*args)

    def _bind_results(self, result: Any) -> dict[str, torch.Tensor]:
        if isinstance(result, torch.Tensor):
            result = (result,)
        bound = {}
        if self._outputs.convention == DICT_KEY or isinstance(result, dict):
            if not isinstance(result, dict):
                raise ModelExecutionError(
                    f"the model returned {type(result).__name__}, not the dict of outputs "
                    "its config expects"
                )
            for name in self._specs:
                if name not in result:
                    raise ModelExecutionError(
                        f"the model's result has no key '{name}' (it has: {', '.join(result)})"
                    )
                bound[name] = result[name]
        else:
            values = list(result)
            for name in self._specs:
                position = self._outputs.position(name)
                if position >= len(values):
                    raise ModelExecutionError(
                        f"output '{name}' is result {position} but the model returned "
                        f"{len(values)} value(s)"
                    )
                bound[name] = values[position]
        for name, value in bound.items():
            if not isinstance(value, torch.Tensor):
                raise ModelExecutionError(
                    f"output '{name}' is a {type(value).__name__}, not a tensor"
                )
        return bound

    def _to_numpy(self, name: str, tensor: torch.Tensor) -> np.ndarray:
        expected = self._output_types[name]
        if tensor.dtype != expected:
            if self._half and tensor.is_floating_point() and expected.is_floating_point:
                tensor = tensor.to(expected)
            else:
                raise ModelExecutionError(
                    f"output '{name}' is {tensor.dtype} but config.pbtxt declares "
                    f"{type_name(self._output_config_types[name])}"
                )
        tensor = tensor.detach().cpu()
        if tensor.dtype is torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(np.uint16)
        return tensor.numpy()

    def close(self) -> None:
        self._module = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()  # give the freed weights back to other processes


def _device(context: InstanceContext) -> torch.device:
    if context.kind != "GPU":
        return _CPU
    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"instance '{context.instance_name}' is KIND_GPU but this torch build cannot use a "
            f"GPU (torch {torch.__version__}, CUDA available: no); install a CUDA build of "
            "torch, or use instance_group [ { kind: KIND_CPU } ]"
        )
    count = torch.cuda.device_count()
    if context.device_id >= count:
        raise ModelLoadError(
            f"instance '{context.instance_name}' wants GPU {context.device_id} but only "
            f"{count} GPU(s) are visible"
        )
    return torch.device("cuda", context.device_id)


def _set_thread_counts(params: dict[str, str]) -> None:
    intra = int_parameter(params, "INTRA_OP_THREAD_COUNT", 0, minimum=0)
    if intra:
        torch.set_num_threads(intra)
    inter = int_parameter(params, "INTER_OP_THREAD_COUNT", 0, minimum=0)
    if inter and torch.get_num_interop_threads() != inter:
        try:
            torch.set_num_interop_threads(inter)
        except RuntimeError as exc:  # torch allows it only before the pool has started
            logger.warning("INTER_OP_THREAD_COUNT %d not applied: %s", inter, exc)


def _check_forward_arguments(
    config: mc.ModelConfig,
    binding: Binding,
    arguments: list[tuple[str, bool]],
    source: str,
) -> None:
    """TorchScript: every config input must land on an argument, and every argument without a
    default must be fed."""
    names = [name for name, _ in arguments]
    problems = []
    for tensor in config.input:
        position = binding.position(tensor.name)
        if position >= len(arguments):
            problems.append(
                f"input '{tensor.name}' maps to argument {position} but forward() of {source} "
                f"takes {len(arguments)}: {', '.join(names) or 'none'}"
            )
    fed = {binding.position(t.name) for t in config.input}
    for position, (name, has_default) in enumerate(arguments):
        if position not in fed and not has_default:
            problems.append(
                f"forward() of {source} needs argument '{name}' (position {position}) but "
                "config.pbtxt declares no input for it (name it "
                f"'{name}' or 'INPUT__{position}')"
            )
    if problems:
        raise ModelLoadError(f"model '{config.name}': " + "; ".join(problems))


def _exported_module(program: Any, device: torch.device) -> Any:
    """The program as a callable module on `device`."""
    if device.type == "cpu":
        return program.module()
    try:
        from torch.export.passes import move_to_device_pass
    except ImportError:  # torch < 2.6: move the unlifted module's weights instead
        return program.module().to(device)
    return move_to_device_pass(program, device).module()


def _compile(module: Any, params: dict[str, str], filename: str) -> Any:
    if not is_export_file(filename):
        raise ModelLoadError(
            "TORCH_COMPILE needs a torch.export program (model.pt2): torch.compile cannot "
            "compile TorchScript modules"
        )
    mode = params.get("TORCH_COMPILE_MODE") or None
    backend = params.get("TORCH_COMPILE_BACKEND") or "inductor"
    try:
        return torch.compile(module, mode=mode, backend=backend)
    except Exception as exc:  # unknown mode or backend
        raise ModelLoadError(f"torch.compile failed: {exc}") from None


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    # TorchScript errors carry the whole interpreter traceback; its last line is the cause.
    last = text.splitlines()[-1] if text else ""
    return f"{type(exc).__name__}: {last}" if last else type(exc).__name__


def create_backend() -> Backend:
    return PyTorchBackend()
