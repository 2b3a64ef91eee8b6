"""An ONNX model's inputs and outputs, read from model.onnx (for auto-complete) or from a loaded
ONNX Runtime session (for the check each instance makes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trident.backends.model_signature import ModelSignature, TensorSignature
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

#: ONNX Runtime's type strings -> config data types.
ORT_TYPE_TO_CONFIG: dict[str, int] = {
    "tensor(bool)": mc.TYPE_BOOL,
    "tensor(uint8)": mc.TYPE_UINT8,
    "tensor(uint16)": mc.TYPE_UINT16,
    "tensor(uint32)": mc.TYPE_UINT32,
    "tensor(uint64)": mc.TYPE_UINT64,
    "tensor(int8)": mc.TYPE_INT8,
    "tensor(int16)": mc.TYPE_INT16,
    "tensor(int32)": mc.TYPE_INT32,
    "tensor(int64)": mc.TYPE_INT64,
    "tensor(float16)": mc.TYPE_FP16,
    "tensor(float)": mc.TYPE_FP32,
    "tensor(double)": mc.TYPE_FP64,
    "tensor(string)": mc.TYPE_STRING,
    "tensor(bfloat16)": mc.TYPE_BF16,
}

#: onnx.TensorProto element types -> ONNX Runtime's spelling (so both readers word errors alike).
_ONNX_ELEM_TO_ORT: dict[int, str] = {
    1: "tensor(float)",
    2: "tensor(uint8)",
    3: "tensor(int8)",
    4: "tensor(uint16)",
    5: "tensor(int16)",
    6: "tensor(int32)",
    7: "tensor(int64)",
    8: "tensor(string)",
    9: "tensor(bool)",
    10: "tensor(float16)",
    11: "tensor(double)",
    12: "tensor(uint32)",
    13: "tensor(uint64)",
    16: "tensor(bfloat16)",
}


def resolve_model_path(path: Path) -> Path:
    """Triton also accepts model.onnx as a folder holding model.onnx and its external data."""
    return path / "model.onnx" if path.is_dir() else path


def read_file_signature(path: Path) -> ModelSignature:
    """Inputs and outputs from model.onnx itself, without loading weights (external data stays
    on disk)."""
    try:
        import onnx
    except ImportError:
        raise ModelLoadError(
            "auto-completing the config of an ONNX model needs the 'onnx' package (pip install "
            "onnx), or declare the inputs and outputs in config.pbtxt"
        ) from None
    model_path = resolve_model_path(path)
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a bad file
        raise ModelLoadError(f"cannot read {model_path}: {exc}") from None
    graph = model.graph
    defaults = {init.name for init in graph.initializer}
    defaults.update(sparse.values.name for sparse in graph.sparse_initializer)
    inputs = [_from_value_info(v, optional=v.name in defaults) for v in graph.input]
    outputs = [_from_value_info(v) for v in graph.output]
    if any(o.shape is None for o in outputs):
        outputs = _inferred_outputs(onnx, model) or outputs
    return ModelSignature(inputs, outputs, model_path.name)


def _from_value_info(value: Any, optional: bool = False) -> TensorSignature:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorSignature(
            value.name, mc.TYPE_INVALID, None, f"{kind} (not a tensor)", optional
        )
    tensor_type = value.type.tensor_type
    type_text = _ONNX_ELEM_TO_ORT.get(tensor_type.elem_type, f"onnx type {tensor_type.elem_type}")
    shape = None
    if tensor_type.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    data_type = ORT_TYPE_TO_CONFIG.get(type_text, mc.TYPE_INVALID)
    return TensorSignature(value.name, data_type, shape, type_text, optional)


def _inferred_outputs(onnx: Any, model: Any) -> list[TensorSignature] | None:
    """Output shapes by ONNX shape inference, for files that leave them out."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a best effort; keep what the file says
        return None
    return [_from_value_info(v) for v in inferred.graph.output]


def session_signature(session: Any, source: str) -> ModelSignature:
    """Inputs and outputs as a loaded session reports them. ONNX Runtime reports an unknown rank
    and a scalar alike (shape []), so an empty shape is treated as unknown."""
    inputs = [_from_node_arg(arg) for arg in session.get_inputs()]
    inputs += [_from_node_arg(arg, optional=True) for arg in session.get_overridable_initializers()]
    outputs = [_from_node_arg(arg) for arg in session.get_outputs()]
    return ModelSignature(inputs, outputs, source)


def _from_node_arg(arg: Any, optional: bool = False) -> TensorSignature:
    shape = None
    if arg.shape:
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    data_type = ORT_TYPE_TO_CONFIG.get(arg.type, mc.TYPE_INVALID)
    return TensorSignature(arg.name, data_type, shape, arg.type, optional)
