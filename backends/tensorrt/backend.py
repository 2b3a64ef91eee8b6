"""TensorRT: runs serialized engines (model.plan), or engines it builds from model.onnx
(builder.py).

Inputs and outputs come from the engine's I/O tensors (auto-complete follows Triton's rules, see
backends/model_signature.py; the batch limit is the optimization profile's maximum). Each
instance deserializes the engine on its GPU (`device_id`; TensorRT has no CPU execution, so a
KIND_CPU instance runs on GPU 0) and owns one execution context on its own CUDA stream, using the
instance group's `profile` (default 0). Dynamic shapes are set per call; a shape outside the
profile is refused with the profile's range. Device memory is managed with torch (a CUDA build
is needed next to `tensorrt`).

Without the `tensorrt` package, torch with CUDA, or a GPU, loading fails with that reason; the
server keeps serving its other models.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from trident.backends.base import Backend, ComputeTiming, InstanceContext, ModelInstance
from trident.backends.batching import (
    Batch,
    BatchResponses,
    form_batches,
    output_specs,
    requested_output_names,
)
from trident.backends.model_signature import (
    DEFAULT_MAX_BATCH_SIZE,
    ModelSignature,
    auto_complete,
    check_config,
    type_name,
)
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import (
    InvalidArgumentError,
    ModelExecutionError,
    ModelLoadError,
    TridentError,
)
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceResponse

from .builder import builds_from_onnx, engine_path
from .plan import (
    deserialize_plan,
    engine_signature,
    import_tensorrt,
    instance_profiles,
)

# Inputs are often read-only views of the received bytes; they are only copied to the GPU, so
# torch's warning about sharing them is noise.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

PLAN_FILENAME = "model.plan"
ONNX_FILENAME = "model.onnx"


class TensorRTBackend(Backend):
    name = "tensorrt"
    platforms = ("tensorrt_plan",)
    default_model_filename = PLAN_FILENAME

    def __init__(self, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> None:
        self.default_max_batch_size = default_max_batch_size

    def auto_complete_config(self, config: mc.ModelConfig, model_dir: Path, strict: bool) -> None:
        def read_signature(path: Path) -> ModelSignature:
            trt = import_tensorrt()
            torch, device = cuda_device(0, "auto-complete")
            with torch.cuda.device(device):
                plan = engine_path(config, path.parent, trt, gpu_description(torch, device))
                _, engine = deserialize_plan(trt, plan.read_bytes(), plan.name)
                return engine_signature(trt, engine, plan.name, instance_profiles(config))

        auto_complete(
            config,
            model_dir,
            strict,
            PLAN_FILENAME,
            read_signature,
            self.default_max_batch_size,
            # Building from ONNX: the version folder holds the model.onnx the engine comes from.
            model_filename=ONNX_FILENAME if builds_from_onnx(config) else None,
        )

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return TensorRTInstance(context)


def cuda_device(device_id: int, who: str) -> tuple[Any, Any]:
    """(torch, torch.device) for the GPU, or a ModelLoadError saying what is missing."""
    try:
        import torch
    except ImportError:
        raise ModelLoadError(
            "the tensorrt backend manages GPU memory with PyTorch, which is not installed: pip "
            "install torch (a CUDA build)"
        ) from None
    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"{who}: TensorRT needs an NVIDIA GPU and none is usable here (torch "
            f"{torch.__version__} reports no CUDA device)"
        )
    count = torch.cuda.device_count()
    if device_id >= count:
        raise ModelLoadError(f"{who}: GPU {device_id} does not exist ({count} GPU(s) visible)")
    return torch, torch.device("cuda", device_id)


def gpu_description(torch: Any, device: Any) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"


class TensorRTInstance(ModelInstance):
    """One engine and execution context on one GPU."""

    def __init__(self, context: InstanceContext) -> None:
        config = context.config
        self._model_name = context.model_name
        self._version = context.model_version
        self._batched = config.max_batch_size > 0
        trt = import_tensorrt()
        self._trt = trt
        torch, device = cuda_device(context.device_id, f"instance '{context.instance_name}'")
        self._torch = torch
        self._device = device
        for tensor in [*config.input, *config.output]:
            if tensor.data_type == mc.TYPE_STRING:
                raise ModelLoadError(f"'{tensor.name}' is TYPE_STRING, which TensorRT cannot hold")
        with torch.cuda.device(device):
            plan = engine_path(config, context.version_dir, trt, gpu_description(torch, device))
            if not plan.is_file():
                raise ModelLoadError(f"model file not found: {plan}")
            self._runtime, self._engine = deserialize_plan(trt, plan.read_bytes(), plan.name)
            self._profile = instance_profiles(config, context.instance_name)[0]
            if self._profile >= self._engine.num_optimization_profiles:
                raise ModelLoadError(
                    f"instance '{context.instance_name}' wants optimization profile "
                    f"{self._profile} but {plan.name} has "
                    f"{self._engine.num_optimization_profiles}"
                )
            check_config(config, engine_signature(trt, self._engine, plan.name, [self._profile]))
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(device)
            if not self._context.set_optimization_profile_async(
                self._profile, self._stream.cuda_stream
            ):
                raise ModelLoadError(f"cannot select optimization profile {self._profile}")
            self._stream.synchronize()
        self._inputs = [
            self._engine.get_tensor_name(i)
            for i in range(self._engine.num_io_tensors)
            if self._engine.get_tensor_mode(self._engine.get_tensor_name(i))
            == trt.TensorIOMode.INPUT
        ]
        self._output_names = [t.name for t in config.output]
        self._specs = output_specs(config)
        self._torch_types = {
            t.name: _torch_dtype(torch, t.data_type) for t in [*config.input, *config.output]
        }

    def execute(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[InferenceResponse]:
        torch = self._torch
        responses = BatchResponses(
            requests, self._specs, self._model_name, self._version, self._batched
        )
        batches = form_batches(requests, self._batched)
        timing.input_end_ns = time.monotonic_ns()  # inputs are copied inside each run below
        finished: list[tuple[Batch, dict[str, np.ndarray]]] = []
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            for batch in batches:
                names = requested_output_names(requests, batch, self._output_names)
                try:
                    finished.append((batch, self._run(batch, names)))
                except TridentError as error:
                    responses.fail(batch, error)
        timing.output_start_ns = time.monotonic_ns()
        for batch, outputs in finished:
            responses.respond(batch, outputs)
        return responses.result()

    def _run(self, batch: Batch, output_names: list[str]) -> dict[str, np.ndarray]:
        torch, context = self._torch, self._context
        keep_alive = []
        for name in self._inputs:
            array = batch.inputs.get(name)
            if array is None:
                raise InvalidArgumentError(f"the TensorRT engine needs input '{name}'")
            self._check_profile(name, array.shape)
            tensor = self._to_device(name, array)
            keep_alive.append(tensor)
            if not context.set_input_shape(name, tuple(array.shape)):
                raise InvalidArgumentError(
                    f"TensorRT refused shape {list(array.shape)} for input '{name}'"
                )
            context.set_tensor_address(name, tensor.data_ptr())
        device_outputs = {}
        for name in self._output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelExecutionError(
                    f"output '{name}' has a data-dependent shape {list(shape)}, which this "
                    "backend does not support"
                )
            tensor = torch.empty(shape, dtype=self._torch_types[name], device=self._device)
            device_outputs[name] = tensor
            context.set_tensor_address(name, tensor.data_ptr())
        if not context.execute_async_v3(self._stream.cuda_stream):
            raise ModelExecutionError("TensorRT failed to run the engine (see the server log)")
        outputs = {name: device_outputs[name].cpu() for name in output_names}
        self._stream.synchronize()
        return {name: _to_numpy(torch, tensor) for name, tensor in outputs.items()}

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        low, _, high = self._engine.get_tensor_profile_shape(name, self._profile)
        low, high = tuple(int(d) for d in low), tuple(int(d) for d in high)
        if len(shape) != len(low) or any(s < lo or s > hi for s, lo, hi in zip(shape, low, high)):
            raise InvalidArgumentError(
                f"input '{name}' has shape {list(shape)}, outside the engine's optimization "
                f"profile {self._profile}: from {list(low)} to {list(high)}"
            )

    def _to_device(self, name: str, array: np.ndarray) -> Any:
        torch = self._torch
        if self._torch_types[name] is torch.bfloat16:
            tensor = torch.from_numpy(np.ascontiguousarray(array).view(np.int16))
            tensor = tensor.view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor.to(self._device, non_blocking=True)

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
        self._torch.cuda.empty_cache()


def _torch_dtype(torch: Any, data_type: int) -> Any:
    table = {
        mc.TYPE_BOOL: torch.bool,
        mc.TYPE_UINT8: torch.uint8,
        mc.TYPE_INT8: torch.int8,
        mc.TYPE_INT32: torch.int32,
        mc.TYPE_INT64: torch.int64,
        mc.TYPE_FP16: torch.float16,
        mc.TYPE_FP32: torch.float32,
        mc.TYPE_BF16: torch.bfloat16,
    }
    dtype = table.get(data_type)  # type: ignore[call-overload]
    if dtype is None:
        raise ModelLoadError(f"TensorRT engines have no {type_name(data_type)} tensors")
    return dtype


def _to_numpy(torch: Any, tensor: Any) -> np.ndarray:
    if tensor.dtype is torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def create_backend() -> Backend:
    return TensorRTBackend()
