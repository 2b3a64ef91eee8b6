"""What PyTorch model files say about their inputs and outputs.

A `torch.export` program (model.pt2) records names, dtypes and shapes, with its dynamic
dimensions and their ranges, so it can fill a config. A TorchScript file (model.pt) records only
the names of `forward()`'s arguments; its config must give the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from trident.backends.model_signature import ModelSignature, TensorSignature
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

from .naming import DICT_KEY, bind_inputs, bind_outputs

TORCH_TO_CONFIG: dict[torch.dtype, int] = {
    torch.bool: mc.TYPE_BOOL,
    torch.uint8: mc.TYPE_UINT8,
    torch.uint16: mc.TYPE_UINT16,
    torch.uint32: mc.TYPE_UINT32,
    torch.uint64: mc.TYPE_UINT64,
    torch.int8: mc.TYPE_INT8,
    torch.int16: mc.TYPE_INT16,
    torch.int32: mc.TYPE_INT32,
    torch.int64: mc.TYPE_INT64,
    torch.float16: mc.TYPE_FP16,
    torch.float32: mc.TYPE_FP32,
    torch.float64: mc.TYPE_FP64,
    torch.bfloat16: mc.TYPE_BF16,
}
CONFIG_TO_TORCH: dict[int, torch.dtype] = {v: k for k, v in TORCH_TO_CONFIG.items()}


def load_export(path: Path) -> Any:
    """torch.export.load: reads the program and its weights without unpickling Python objects."""
    try:
        return torch.export.load(str(path))
    except Exception as exc:  # torch raises many kinds for a bad or foreign file
        raise ModelLoadError(f"cannot load the torch.export program {path.name}: {exc}") from None


def load_torchscript(path: Path, device: torch.device) -> Any:
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {path.name} as TorchScript: {exc} (model.pt must be saved with "
            "torch.jit.save of a traced or scripted module; for torch.export programs use "
            "model.pt2)"
        ) from None


def forward_arguments(module: Any) -> list[tuple[str, bool]]:
    """TorchScript `forward()` arguments after `self`: (name, has a default)."""
    schema = module.forward.schema
    return [(arg.name, arg.default_value is not None) for arg in schema.arguments[1:]]


def export_input_names(program: Any) -> list[str]:
    """The program's input names: `forward()`'s argument names when the program has one tensor
    per argument, else its placeholder names."""
    user_inputs = list(program.graph_signature.user_inputs)
    try:
        arg_names = list(program.module_call_graph[0].signature.forward_arg_names)
    except (AttributeError, IndexError, TypeError):
        arg_names = []
    return arg_names if len(arg_names) == len(user_inputs) else user_inputs


def export_output_keys(program: Any) -> list[str] | None:
    """The keys, when the program returns a flat dict of tensors."""
    spec = program.call_spec.out_spec
    if spec is not None and spec.type is dict:
        return [str(key) for key in spec.context]
    return None


def read_export_signature(path: Path) -> ModelSignature:
    return export_signature(load_export(path), path.name)


def export_signature(program: Any, source: str) -> ModelSignature:
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    names = export_input_names(program)
    batch_limits: list[int | None] = []
    inputs = []
    for name, placeholder in zip(names, program.graph_signature.user_inputs):
        value = placeholders[placeholder].meta.get("val")
        inputs.append(_tensor_signature(name, value, program, batch_limits))
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    values = [
        node.meta.get("val") if hasattr(node, "meta") else node
        for spec, node in zip(program.graph_signature.output_specs, output_node.args[0])
        if spec.kind.name == "USER_OUTPUT"
    ]
    keys = export_output_keys(program)
    output_names = (
        keys if keys and len(keys) == len(values) else [f"OUTPUT__{i}" for i in range(len(values))]
    )
    outputs = [
        _tensor_signature(name, value, program, batch_limits)
        for name, value in zip(output_names, values)
    ]
    known = [limit for limit in batch_limits if limit is not None]
    return ModelSignature(inputs, outputs, source, min(known) if known else None)


def _tensor_signature(
    name: str, value: Any, program: Any, batch_limits: list[int | None]
) -> TensorSignature:
    if not isinstance(value, torch.Tensor):
        text = f"{type(value).__name__} (not a tensor)"
        return TensorSignature(name, mc.TYPE_INVALID, None, text)
    shape = []
    for index, dim in enumerate(value.shape):
        if isinstance(dim, torch.SymInt):
            shape.append(-1)
            if index == 0:
                batch_limits.append(_upper_bound(program, dim))
        else:
            shape.append(int(dim))
    data_type = TORCH_TO_CONFIG.get(value.dtype, mc.TYPE_INVALID)
    return TensorSignature(name, data_type, tuple(shape), str(value.dtype).replace("torch.", ""))


def _upper_bound(program: Any, dim: torch.SymInt) -> int | None:
    """The Dim(max=...) of a dynamic dimension; None when unbounded."""
    ranges = program.range_constraints.get(dim.node.expr)
    if ranges is None:
        return None
    try:
        upper = int(ranges.upper)
    except Exception:  # sympy's infinity (int_oo) has no int value
        return None
    return upper if upper < sys.maxsize // 2 else None


def align_signature(config: mc.ModelConfig, signature: ModelSignature) -> ModelSignature:
    """The signature with its tensors renamed to the config names they bind to (INPUT__0 ->
    the first argument), so the config can be checked name by name."""
    arg_names = [t.name for t in signature.inputs]
    inputs_binding = bind_inputs([t.name for t in config.input], arg_names)
    inputs = list(signature.inputs)
    renamed_inputs = []
    for tensor in config.input:
        position = inputs_binding.position(tensor.name)
        if position < len(inputs):
            renamed_inputs.append(_renamed(inputs[position], tensor.name))
    bound = {inputs_binding.position(t.name) for t in config.input}
    renamed_inputs += [t for i, t in enumerate(inputs) if i not in bound]
    output_keys = [t.name for t in signature.outputs]
    outputs_binding = bind_outputs([t.name for t in config.output], output_keys)
    renamed_outputs = []
    if outputs_binding.convention == DICT_KEY:
        renamed_outputs = list(signature.outputs)
    else:
        for tensor in config.output:
            position = outputs_binding.position(tensor.name)
            if position < len(signature.outputs):
                renamed_outputs.append(_renamed(signature.outputs[position], tensor.name))
    return ModelSignature(renamed_inputs, renamed_outputs, signature.source, signature.batch_limit)


def _renamed(tensor: TensorSignature, name: str) -> TensorSignature:
    return TensorSignature(name, tensor.data_type, tensor.shape, tensor.type_text, tensor.optional)
