"""ONNX Runtime session options and execution providers from a model config, with Triton's
onnxruntime backend key names:

- `parameters`: `intra_op_thread_count`, `inter_op_thread_count` (0 = ONNX Runtime's default),
  `execution_mode` (0 sequential, 1 parallel), `enable_mem_arena`, `enable_mem_pattern`,
  `session.use_device_allocator_for_initializers`, `memory.enable_memory_arena_shrinkage` (a run
  option), and the older CUDA keys `cudnn_conv_algo_search`, `gpu_mem_limit`,
  `arena_extend_strategy`, `do_copy_in_default_stream`.
- `optimization { graph { level } }`: -1 basic, 1 extended, 2 none, anything else all.
- `optimization { execution_accelerators { ... } }`: for KIND_GPU instances,
  `gpu_execution_accelerator` "tensorrt" (TensorRT EP; `precision_mode` FP16/INT8,
  `max_workspace_size_bytes`, `trt_*` keys) and "cuda" (CUDA EP options); the CUDA EP always runs
  a GPU instance on its `device_id`. `cpu_execution_accelerator` "openvino" adds OpenVINO.
  The CPU provider comes last, for what the others cannot run.
"""

from __future__ import annotations

from typing import Any

from trident.backends.parameters import bool_parameter, int_parameter, model_parameters
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"

#: What to install when a provider is missing from this onnxruntime build.
INSTALL_HINTS: dict[str, str] = {
    CUDA: "install the GPU build of ONNX Runtime: pip uninstall onnxruntime && pip install "
    "onnxruntime-gpu",
    TENSORRT: "install the GPU build of ONNX Runtime and TensorRT: pip uninstall onnxruntime "
    "&& pip install onnxruntime-gpu tensorrt",
    OPENVINO: "install the OpenVINO build of ONNX Runtime: pip uninstall onnxruntime && pip "
    "install onnxruntime-openvino",
}

#: Triton's TensorRT-accelerator keys that ONNX Runtime spells differently.
_TRT_RENAMED = {
    "max_workspace_size_bytes": "trt_max_workspace_size",
    "int8_calibration_table_name": "trt_int8_calibration_table_name",
    "int8_use_native_calibration_table": "trt_int8_use_native_calibration_table",
}
_CUDNN_CONV_ALGO = {0: "EXHAUSTIVE", 1: "HEURISTIC", 2: "DEFAULT"}
_ARENA_EXTEND = {0: "kNextPowerOfTwo", 1: "kSameAsRequested"}

ProviderList = list[tuple[str, dict[str, str]]]


def session_options(ort: Any, config: mc.ModelConfig) -> Any:
    """An ort.SessionOptions built from the config."""
    params = model_parameters(config)
    options = ort.SessionOptions()
    options.graph_optimization_level = _graph_level(ort, config)
    intra = int_parameter(params, "intra_op_thread_count", 0, minimum=0)
    inter = int_parameter(params, "inter_op_thread_count", 0, minimum=0)
    if intra:
        options.intra_op_num_threads = intra
    if inter:
        options.inter_op_num_threads = inter
    mode = int_parameter(params, "execution_mode", 0)
    if mode not in (0, 1):
        raise ModelLoadError(
            f"parameter 'execution_mode' must be 0 (sequential) or 1 (parallel), not {mode}"
        )
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if mode == 1 else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    if "enable_mem_arena" in params:
        options.enable_cpu_mem_arena = bool_parameter(params, "enable_mem_arena", True)
    if "enable_mem_pattern" in params:
        options.enable_mem_pattern = bool_parameter(params, "enable_mem_pattern", True)
    key = "session.use_device_allocator_for_initializers"
    if key in params:
        options.add_session_config_entry(key, params[key])
    return options


def run_options(ort: Any, config: mc.ModelConfig) -> Any | None:
    """ort.RunOptions when the config sets run-time keys, else None (ONNX Runtime's default)."""
    key = "memory.enable_memory_arena_shrinkage"
    value = model_parameters(config).get(key)
    if not value:
        return None
    options = ort.RunOptions()
    options.add_run_config_entry(key, value)
    return options


def _graph_level(ort: Any, config: mc.ModelConfig) -> Any:
    level = config.optimization.graph.level
    levels = ort.GraphOptimizationLevel
    if level == -1:
        return levels.ORT_ENABLE_BASIC
    if level == 1:
        return levels.ORT_ENABLE_EXTENDED
    if level == 2:
        return levels.ORT_DISABLE_ALL
    return levels.ORT_ENABLE_ALL


def execution_providers(
    config: mc.ModelConfig, kind: str, device_id: int, available: list[str], instance: str
) -> ProviderList:
    """The providers, in priority order, with their options. Raises ModelLoadError naming the
    package to install when this onnxruntime build lacks one."""
    accelerators = config.optimization.execution_accelerators
    providers: ProviderList = []
    if kind == "GPU":
        cuda_options = _legacy_cuda_options(config)
        for accelerator in accelerators.gpu_execution_accelerator:
            if accelerator.name == "tensorrt":
                providers.append((TENSORRT, _tensorrt_options(accelerator, device_id)))
            elif accelerator.name == "cuda":
                cuda_options.update(accelerator.parameters)
            else:
                raise ModelLoadError(
                    f"unknown gpu_execution_accelerator '{accelerator.name}' (the onnxruntime "
                    "backend knows 'tensorrt' and 'cuda')"
                )
        cuda_options["device_id"] = str(device_id)
        providers.append((CUDA, cuda_options))
    for accelerator in accelerators.cpu_execution_accelerator:
        if accelerator.name == "openvino":
            providers.append((OPENVINO, {"device_type": "CPU", **accelerator.parameters}))
        else:
            raise ModelLoadError(
                f"unknown cpu_execution_accelerator '{accelerator.name}' (the onnxruntime "
                "backend knows 'openvino')"
            )
    providers.append((CPU, {}))
    for name, _ in providers:
        if name not in available:
            raise ModelLoadError(
                f"instance '{instance}' needs ONNX Runtime's {name}, which this onnxruntime "
                f"build does not have (it has: {', '.join(available)}); {INSTALL_HINTS[name]}"
            )
    return providers


def _tensorrt_options(
    accelerator: mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator, device_id: int
) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in accelerator.parameters.items():
        if key == "precision_mode":
            mode = value.upper()
            if mode == "FP16":
                options["trt_fp16_enable"] = "True"
            elif mode == "INT8":
                options["trt_int8_enable"] = "True"
            elif mode != "FP32":
                raise ModelLoadError(
                    f"TensorRT accelerator precision_mode must be FP32, FP16 or INT8, not '{value}'"
                )
        elif key in _TRT_RENAMED:
            options[_TRT_RENAMED[key]] = value
        elif key.startswith("trt_"):
            options[key] = value
        else:
            raise ModelLoadError(
                f"unknown parameter '{key}' for the TensorRT execution accelerator"
            )
    options["device_id"] = str(device_id)
    return options


def _legacy_cuda_options(config: mc.ModelConfig) -> dict[str, str]:
    """CUDA EP options from the model `parameters` (Triton's deprecated, still honoured keys)."""
    params = model_parameters(config)
    options: dict[str, str] = {}
    if "cudnn_conv_algo_search" in params:
        algo = int_parameter(params, "cudnn_conv_algo_search", 0)
        if algo not in _CUDNN_CONV_ALGO:
            raise ModelLoadError(f"unsupported cudnn_conv_algo_search value {algo} (0, 1 or 2)")
        options["cudnn_conv_algo_search"] = _CUDNN_CONV_ALGO[algo]
    if "arena_extend_strategy" in params:
        strategy = int_parameter(params, "arena_extend_strategy", 0)
        if strategy not in _ARENA_EXTEND:
            raise ModelLoadError(f"unsupported arena_extend_strategy value {strategy} (0 or 1)")
        options["arena_extend_strategy"] = _ARENA_EXTEND[strategy]
    for key in ("gpu_mem_limit", "do_copy_in_default_stream"):
        if params.get(key):
            options[key] = params[key]
    return options
