"""What a model file says about its inputs and outputs, and Triton's rules for completing a
config from it and checking a config against it. Shared by the framework backends.

Auto-complete (Triton's, `--strict-model-config=false`, the default):
- a config that declares both inputs and outputs is left alone (instances still check it);
- otherwise the model file is read: when every input and output has a variable first dimension
  the model can batch, and `max_batch_size` 0 becomes the largest batch the file declares (a
  torch.export Dim max, a TensorRT profile maximum), else DEFAULT_MAX_BATCH_SIZE, with a
  `dynamic_batching {}` scheduler when none is configured; a model that cannot batch with a
  non-zero `max_batch_size` is an error. Unlike Triton, a config that declares some tensor
  with the model's full shape (batch dimension included) keeps max_batch_size 0, since that
  is what its dims mean;
- missing inputs / outputs are filled from the file, `dims` without the batch dimension; a
  scalar becomes `dims: [1]` with `reshape: { shape: [] }`. The sequence batcher's control
  inputs and implicit-state inputs and outputs (`sequence_batching`) are left out: the server
  supplies and consumes them, so clients neither send nor see them.
With strict config the config must already be complete; it is checked against the model file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

#: max_batch_size that auto-complete gives a model that can batch (Triton's onnxruntime
#: `default-max-batch-size` backend setting, also 4).
DEFAULT_MAX_BATCH_SIZE = 4


def type_name(data_type: int) -> str:
    """TYPE_FP32 etc. for a config DataType value."""
    try:
        return mc.DataType.Name(data_type)
    except ValueError:
        return f"TYPE_{data_type}"


@dataclass(frozen=True, slots=True)
class TensorSignature:
    """One input or output as the model file describes it."""

    name: str
    #: Config DataType; TYPE_INVALID when the file does not record it.
    data_type: int
    #: The model's full shape, batch dimension included; -1 for a variable dimension. None when
    #: the file does not record the rank.
    shape: tuple[int, ...] | None
    #: The framework's own spelling of the type, quoted in errors (e.g. "tensor(float16)").
    type_text: str = ""
    #: The model runs without it (an ONNX initializer that doubles as an input).
    optional: bool = False

    def describe(self) -> str:
        kind = self.type_text or type_name(self.data_type)
        shape = list(self.shape) if self.shape is not None else "(shape unknown)"
        return f"{kind} {shape}"


@dataclass(slots=True)
class ModelSignature:
    """A model file's inputs and outputs."""

    inputs: list[TensorSignature]
    outputs: list[TensorSignature]
    #: The file name quoted in messages, e.g. "model.onnx".
    source: str
    #: The largest batch the file allows, where it says (a torch.export Dim max, a TensorRT
    #: optimization profile); None when unbounded or unknown.
    batch_limit: int | None = None

    def supports_batching(self) -> bool:
        """Triton's rule: every input and output has a variable first dimension."""
        tensors = [t for t in self.inputs if not t.optional] + self.outputs
        return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)


def batcher_inputs(config: mc.ModelConfig) -> set[str]:
    """The inputs the sequence batcher adds to every request: its control inputs and the
    implicit-state inputs."""
    sequence = config.sequence_batching
    return {control.name for control in sequence.control_input} | {
        state.input_name for state in sequence.state
    }


def state_outputs(config: mc.ModelConfig) -> set[str]:
    """The implicit-state outputs the sequence batcher takes from every response."""
    return {state.output_name for state in config.sequence_batching.state}


def find_model_file(model_dir: Path, config: mc.ModelConfig, filename: str) -> Path | None:
    """The model file auto-complete reads: `filename` in the highest version folder that holds
    it (among the config's `specific` versions, when the version policy names them)."""
    try:
        versions = sorted(
            (int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
            reverse=True,
        )
    except OSError:
        return None
    if config.version_policy.HasField("specific"):
        allowed = set(config.version_policy.specific.versions)
        versions = [v for v in versions if v in allowed]
    for version in versions:
        candidate = model_dir / str(version) / filename
        if candidate.exists():
            return candidate
    return None


def auto_complete(
    config: mc.ModelConfig,
    model_dir: Path,
    strict: bool,
    default_filename: str,
    read_signature: Callable[[Path], ModelSignature],
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    align: Callable[[mc.ModelConfig, ModelSignature], ModelSignature] | None = None,
    model_filename: str | None = None,
) -> None:
    """The whole `Backend.auto_complete_config` for a backend whose model files record their
    inputs and outputs. `align` renames the file's tensors to the config's names where the
    backend maps them by another convention (PyTorch's INPUT__0) before the config is checked.
    `model_filename` names the file to read when it is not the config's model file (TensorRT
    reads the model.onnx it builds model.plan from)."""
    complete = bool(config.input) and bool(config.output)
    if complete and not strict:
        return  # Triton leaves complete configs alone; each instance checks them on load
    filename = model_filename or config.default_model_filename or default_filename
    path = find_model_file(model_dir, config, filename)
    if strict:
        if path is None:
            if not complete:
                require_complete(config, None)
            return  # the core reports the missing version folder
        signature = read_signature(path)
        if not complete:
            require_complete(config, signature)
        check_config(config, align(config, signature) if align else signature)
        return
    if path is None:
        raise ModelLoadError(
            f"model '{config.name}': cannot auto-complete the config: no version folder in "
            f"{model_dir} holds {filename}; add one, or declare the inputs and outputs in "
            "config.pbtxt"
        )
    signature = read_signature(path)
    complete_config(config, signature, default_max_batch_size)
    check_config(config, align(config, signature) if align else signature)


def require_complete(config: mc.ModelConfig, signature: ModelSignature | None) -> None:
    """Strict config: raise unless the config declares inputs and outputs, suggesting them."""
    missing = [
        kind
        for kind, tensors in (("input", config.input), ("output", config.output))
        if not tensors
    ]
    if not missing:
        return
    message = (
        f"model '{config.name}': strict model config is on (no auto-complete), so config.pbtxt "
        f"must declare the model's {' and '.join(m + 's' for m in missing)}"
    )
    if signature is not None:
        batched = config.max_batch_size > 0 or signature.supports_batching()
        lines = [suggest_tensors(kind, getattr(signature, kind + "s"), batched) for kind in missing]
        if batched and config.max_batch_size == 0:
            lines.insert(0, f"max_batch_size: {DEFAULT_MAX_BATCH_SIZE}")
        message += f"; from {signature.source}, for example: " + " ".join(lines)
    raise ModelLoadError(message)


def suggest_tensors(kind: str, tensors: Iterable[TensorSignature], batched: bool) -> str:
    """config.pbtxt text declaring `tensors` (what auto-complete would have written)."""
    entries = []
    for tensor in tensors:
        if tensor.optional:
            continue
        dims = _config_dims(tensor, batched)
        data_type = type_name(tensor.data_type) if tensor.data_type else "TYPE_..."
        dims_text = ", ".join(str(d) for d in dims) if dims is not None else "..."
        entries.append(f'{{ name: "{tensor.name}" data_type: {data_type} dims: [ {dims_text} ] }}')
    return f"{kind} [ {', '.join(entries)} ]"


def _config_dims(tensor: TensorSignature, batched: bool) -> list[int] | None:
    if tensor.shape is None:
        return None
    return list(tensor.shape[1:] if batched else tensor.shape) or [1]


def complete_config(
    config: mc.ModelConfig,
    signature: ModelSignature,
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> None:
    """Fill max_batch_size, inputs and outputs from the model file (Triton's rules, above)."""
    where = f"model '{config.name}'"
    if signature.supports_batching() and not _declares_full_shapes(config, signature):
        if config.max_batch_size == 0:
            # A bound the file declares (a torch.export Dim max, a TensorRT profile) is what
            # the model's author chose; Triton's default applies only when it declares none.
            config.max_batch_size = signature.batch_limit or default_max_batch_size
        if config.max_batch_size > 1 and not (
            config.HasField("dynamic_batching") or config.HasField("sequence_batching")
        ):
            config.dynamic_batching.SetInParent()
    elif config.max_batch_size != 0:
        raise ModelLoadError(
            f"{where}: config.pbtxt sets max_batch_size {config.max_batch_size} but "
            f"{signature.source} cannot batch (every input and output needs a variable first "
            "dimension): set max_batch_size: 0"
        )
    batched = config.max_batch_size > 0
    supplied = batcher_inputs(config)
    if not config.input:
        inputs = [t for t in signature.inputs if not t.optional and t.name not in supplied]
        _fill(config.input, inputs, batched, where)
    if not config.output:
        states = state_outputs(config)
        _fill(config.output, [t for t in signature.outputs if t.name not in states], batched, where)


def _declares_full_shapes(config: mc.ModelConfig, signature: ModelSignature) -> bool:
    """Whether a tensor the config declares already spells out the model's whole shape, batch
    dimension included: the config then means max_batch_size 0, which Triton cannot tell from
    an omitted one (it would set the default and then reject those dims)."""
    by_name = {t.name: t for t in [*signature.inputs, *signature.outputs]}
    for tensor in [*config.input, *config.output]:
        found = by_name.get(tensor.name)
        if found is None or found.shape is None or tensor.HasField("reshape"):
            continue
        if len(tensor.dims) == len(found.shape):
            return True
    return False


def _fill(field, tensors: list[TensorSignature], batched: bool, where: str) -> None:  # type: ignore[no-untyped-def]
    for tensor in tensors:
        if tensor.data_type == mc.TYPE_INVALID:
            raise ModelLoadError(
                f"{where}: cannot derive a config data type for '{tensor.name}' from the model "
                f"file ({tensor.type_text or 'type not recorded'}); declare it in config.pbtxt"
            )
        dims = _config_dims(tensor, batched)
        if dims is None:
            raise ModelLoadError(
                f"{where}: the model file does not record the shape of '{tensor.name}'; "
                "declare its dims in config.pbtxt"
            )
        entry = field.add()
        entry.name = tensor.name
        entry.data_type = tensor.data_type
        entry.dims.extend(dims)
        if len(tensor.shape or ()) == (1 if batched else 0):
            entry.reshape.SetInParent()  # a scalar per batch item: dims [1], model shape []


def check_config(config: mc.ModelConfig, signature: ModelSignature) -> None:
    """Raise, naming every mismatch, unless the config fits the model file."""
    problems: list[str] = []
    source = signature.source
    batched = config.max_batch_size > 0
    for kind, declared, actual in (
        ("input", config.input, signature.inputs),
        ("output", config.output, signature.outputs),
    ):
        by_name = {t.name: t for t in actual}
        for tensor in declared:
            found = by_name.get(tensor.name)
            if found is None:
                names = ", ".join(f"'{t.name}'" for t in actual) or "none"
                problems.append(
                    f"config.pbtxt declares {kind} '{tensor.name}' but {source} has no such "
                    f"{kind} (its {kind}s: {names})"
                )
                continue
            problem = _compare(kind, tensor, found, config.max_batch_size, source)
            if problem:
                problems.append(problem)
    # The sequence batcher supplies its control and state inputs; clients never send them.
    supplied = batcher_inputs(config)
    declared_inputs = {t.name for t in config.input} | supplied
    for tensor in signature.inputs:
        if not tensor.optional and tensor.name not in declared_inputs:
            problems.append(
                f"{source} needs input '{tensor.name}' ({tensor.describe()}) but config.pbtxt "
                "does not declare it"
            )
    model_inputs = {t.name for t in signature.inputs}
    for name in sorted(supplied - model_inputs):
        problems.append(
            f"sequence_batching feeds input '{name}' to every request but {source} has no "
            "such input"
        )
    model_outputs = {t.name for t in signature.outputs}
    for name in sorted(state_outputs(config) - model_outputs):
        problems.append(f"sequence_batching state output '{name}' is not an output of {source}")
    if batched and signature.batch_limit and config.max_batch_size > signature.batch_limit:
        problems.append(
            f"max_batch_size {config.max_batch_size} is above the largest batch "
            f"{signature.batch_limit} that {source} accepts"
        )
    if problems:
        raise ModelLoadError(f"model '{config.name}': " + "; ".join(problems))


def _compare(
    kind: str,
    tensor: mc.ModelInput | mc.ModelOutput,
    found: TensorSignature,
    max_batch_size: int,
    source: str,
) -> str | None:
    batched = max_batch_size > 0
    model_dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    expected = [-1, *model_dims] if batched else model_dims
    type_ok = found.data_type in (mc.TYPE_INVALID, tensor.data_type)
    shape_ok = found.shape is None or _shape_fits(expected, found.shape)
    if type_ok and shape_ok:
        return None
    said = f"{type_name(tensor.data_type)} dims {list(tensor.dims)}"
    if tensor.HasField("reshape"):
        said += f" reshape {model_dims}"
    if batched:
        said += f" with max_batch_size {max_batch_size}"
    message = (
        f"config.pbtxt says {kind} '{tensor.name}' is {said} but {source} has {found.describe()}"
    )
    shape = found.shape
    if not shape_ok and shape is not None:
        if batched and shape and shape[0] != -1:
            message += (
                " (its first dimension is fixed, so it cannot batch: set max_batch_size: 0 and "
                "give the full shape in dims)"
            )
        elif not batched and len(shape) == len(expected) + 1 and shape[0] == -1:
            message += (
                " (its first dimension is a variable batch dimension: set max_batch_size > 0, "
                "or add -1 in front of dims)"
            )
    return message


def _shape_fits(config_shape: list[int], model_shape: tuple[int, ...]) -> bool:
    """A model dim of -1 takes any config dim; a fixed model dim needs the same config dim."""
    return len(config_shape) == len(model_shape) and all(
        m == -1 or m == c for c, m in zip(config_shape, model_shape)
    )
