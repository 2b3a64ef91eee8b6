"""Model configuration: parse `config.pbtxt`, complete it, validate it, and render it as JSON.

The one schema is Triton's `ModelConfig` protobuf message (protos/model_config.proto). The same
normalized message is what the config endpoints return and what Python models receive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor, json_format, text_format

from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

from . import devices

#: Backends whose KIND_AUTO instances go to a GPU when one exists.
GPU_BACKENDS = frozenset({"onnxruntime", "pytorch", "tensorrt", "llm"})
#: Backends that accept KIND_GPU (Python models get the device id and use it themselves).
GPU_CAPABLE_BACKENDS = GPU_BACKENDS | {"python"}

CONFIG_FILENAME = "config.pbtxt"

#: (platform, default model file) that Triton reports for each backend.
BACKEND_DEFAULTS: dict[str, tuple[str, str]] = {
    "python": ("", "model.py"),
    "onnxruntime": ("onnxruntime_onnx", "model.onnx"),
    "pytorch": ("pytorch_libtorch", "model.pt"),
    "tensorrt": ("tensorrt_plan", "model.plan"),
    "ensemble": ("ensemble", ""),
}


def parse_config_text(text: str, source: str = CONFIG_FILENAME) -> mc.ModelConfig:
    """Parse protobuf text format; errors name the file, line and column."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ModelLoadError(f"{source}: {exc}") from None
    return config


def parse_config_json(text: str) -> mc.ModelConfig:
    """Parse a config override sent with a load request (JSON ModelConfig, unknown fields
    rejected, as Triton does)."""
    config = mc.ModelConfig()
    try:
        json_format.Parse(text, config)
    except (json_format.ParseError, ValueError) as exc:
        raise ModelLoadError(f"invalid config override: {exc}") from None
    return config


def read_config(model_dir: Path) -> mc.ModelConfig:
    """The config in MODEL_DIR/config.pbtxt, or an empty one when there is no file."""
    path = model_dir / CONFIG_FILENAME
    if not path.exists():
        return mc.ModelConfig()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    return parse_config_text(text, str(path))


def normalize(config: mc.ModelConfig, model_name: str, backend: str) -> None:
    """Fill the fields Triton fills for every model, in place."""
    if config.name and config.name != model_name:
        raise ModelLoadError(
            f"config.pbtxt names the model '{config.name}' but its folder is '{model_name}': "
            "make them match, or leave 'name' out"
        )
    config.name = model_name
    platform, default_file = BACKEND_DEFAULTS.get(backend, ("", ""))
    if backend != "ensemble":
        config.backend = backend
    if not config.platform and backend != "python":
        config.platform = platform
    if not config.default_model_filename:
        config.default_model_filename = default_file
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if backend == "ensemble":
        config.ClearField("instance_group")
        if not config.HasField("model_transaction_policy"):
            config.model_transaction_policy.decoupled = False
        return
    if not config.HasField("optimization"):
        config.optimization.input_pinned_memory.enable = True
        config.optimization.output_pinned_memory.enable = True
    if not config.instance_group:
        config.instance_group.add()
    available_gpus = devices.gpu_ids() if backend in GPU_CAPABLE_BACKENDS else ()
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{model_name}_{index}"
        if group.count == 0:
            group.count = 1
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            # As Triton: a GPU when the backend can use one and one exists, else the CPU.
            use_gpu = bool(group.gpus) or (bool(available_gpus) and backend in GPU_BACKENDS)
            group.kind = (
                mc.ModelInstanceGroup.KIND_GPU if use_gpu else mc.ModelInstanceGroup.KIND_CPU
            )
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            if backend not in GPU_CAPABLE_BACKENDS:
                raise ModelLoadError(
                    f"instance_group '{group.name}' asks for KIND_GPU but the '{backend}' backend "
                    "runs on the CPU here: use KIND_CPU"
                )
            if not available_gpus:
                raise ModelLoadError(
                    f"instance_group '{group.name}' asks for KIND_GPU but no CUDA GPU is visible "
                    "to this server: use KIND_CPU, or run where a GPU is available"
                )
            missing = [gpu for gpu in group.gpus if gpu not in available_gpus]
            if missing:
                raise ModelLoadError(
                    f"instance_group '{group.name}' lists GPU(s) {missing} but this server sees "
                    f"GPU ids {list(available_gpus)}"
                )
            if not group.gpus:
                group.gpus.extend(available_gpus)  # Triton: an empty list means every GPU


def validate(config: mc.ModelConfig) -> None:
    """Reject configs Triton rejects, with a message that says what to change."""
    where = f"model '{config.name}'"
    if config.max_batch_size < 0:
        raise ModelLoadError(f"{where}: max_batch_size must be >= 0")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            if not tensor.name:
                raise ModelLoadError(f"{where}: every {kind} needs a 'name'")
            if tensor.name in seen:
                raise ModelLoadError(f"{where}: {kind} '{tensor.name}' is declared twice")
            seen.add(tensor.name)
            if tensor.data_type == mc.TYPE_INVALID:
                raise ModelLoadError(
                    f"{where}: {kind} '{tensor.name}' needs a 'data_type' (e.g. TYPE_FP32)"
                )
            for dim in tensor.dims:
                if dim < -1 or dim == 0:
                    raise ModelLoadError(
                        f"{where}: {kind} '{tensor.name}' has dimension {dim}; dims must be "
                        "positive, or -1 for a variable size"
                    )
    batching = config.dynamic_batching
    if config.HasField("dynamic_batching"):
        if batching.preserve_ordering and batching.priority_levels > 1:
            raise ModelLoadError(
                f"{where}: only one priority level is allowed when 'preserve_ordering' is true"
            )
        if batching.priority_levels and batching.default_priority_level > batching.priority_levels:
            raise ModelLoadError(
                f"{where}: default_priority_level {batching.default_priority_level} is above "
                f"priority_levels {batching.priority_levels}"
            )
    for group in config.instance_group:
        if group.count < 0:
            raise ModelLoadError(f"{where}: instance_group '{group.name}' has a negative count")


# --------------------------------------------------------------------------------------------
# JSON rendering, as Triton's config endpoint shows it.

_INT64_TYPES = {
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_FIXED64,
    descriptor.FieldDescriptor.TYPE_SFIXED64,
}


def message_to_dict(message: Any) -> dict[str, Any]:
    """protobuf -> dict the way Triton renders it: snake_case names, every scalar printed even at
    its default, unset sub-messages omitted, and 64-bit integers as JSON numbers (protobuf's JSON
    mapping would print them as strings; Triton converts most of them back, we convert all)."""
    rendered = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    _int64_to_numbers(message.DESCRIPTOR, rendered)
    return rendered


def _int64_to_numbers(message_descriptor: descriptor.Descriptor, rendered: dict[str, Any]) -> None:
    for field in message_descriptor.fields:
        value = rendered.get(field.name)
        if value is None:
            continue
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    for item in value.values():
                        _int64_to_numbers(value_field.message_type, item)
                elif value_field.type in _INT64_TYPES:
                    for key in value:
                        value[key] = int(value[key])
            elif isinstance(value, list):
                for item in value:
                    _int64_to_numbers(field.message_type, item)
            else:
                _int64_to_numbers(field.message_type, value)
        elif field.type in _INT64_TYPES:
            rendered[field.name] = (
                [int(v) for v in value] if isinstance(value, list) else int(value)
            )


def config_to_json(config: mc.ModelConfig) -> str:
    return json.dumps(message_to_dict(config), separators=(",", ":"))


def config_with_overrides(base: Iterable[mc.ModelConfig]) -> mc.ModelConfig:
    """Merge configs in order (later ones win field by field)."""
    merged = mc.ModelConfig()
    for config in base:
        merged.MergeFrom(config)
    return merged
