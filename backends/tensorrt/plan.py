"""Reading TensorRT plans: the `tensorrt` import, engine deserialization with errors that say
what to do, the TensorRT version a plan was built by, and an engine's inputs and outputs.

A plan only deserializes in the TensorRT version that built it (unless it was built
version-compatible), which is the most common reason a plan fails to load; the message then names
both versions. Since TensorRT 8.6 a plan's header records the building version: bytes 24-27 hold
major, minor, patch and build, after a 4-byte magic tag (NVIDIA's answer in TensorRT issue #3073;
there is no API for it). A header this code cannot read just leaves the versions out.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from trident.backends.model_signature import ModelSignature, TensorSignature
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

logger = logging.getLogger(__name__)

#: Magic tags seen at the start of TensorRT plans ("ptrt", and "ftrt").
_PLAN_MAGIC = (b"ptrt", b"ftrt")
_VERSION_OFFSET = 24

#: trt.DataType names -> config data types (FP8, INT4 and others have no config type).
TRT_TO_CONFIG: dict[str, int] = {
    "FLOAT": mc.TYPE_FP32,
    "HALF": mc.TYPE_FP16,
    "BF16": mc.TYPE_BF16,
    "INT8": mc.TYPE_INT8,
    "UINT8": mc.TYPE_UINT8,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "BOOL": mc.TYPE_BOOL,
}

REBUILD_HINT = (
    'or put model.onnx in the version folder and set parameters { key: "build_engine_from_onnx" '
    'value: { string_value: "true" } } to have the server build the engine and cache it'
)


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise ModelLoadError(
            f"the tensorrt backend needs NVIDIA's 'tensorrt' package, which is not installed "
            f"({exc}): pip install tensorrt (on a machine with an NVIDIA GPU)"
        ) from None
    return tensorrt


def plan_version(data: bytes) -> tuple[int, int, int, int] | None:
    """(major, minor, patch, build) of the TensorRT that built the plan, or None when the header
    does not say (a plan older than TensorRT 8.6, or not a plan)."""
    if len(data) < _VERSION_OFFSET + 4 or data[:4] not in _PLAN_MAGIC:
        return None
    major, minor, patch, build = data[_VERSION_OFFSET : _VERSION_OFFSET + 4]
    if not 8 <= major <= 99:
        return None
    return major, minor, patch, build


def version_tuple(version: str) -> tuple[int, ...]:
    """ "10.3.0.post1" -> (10, 3, 0)."""
    numbers = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):
            break
    return tuple(numbers)


def versions_differ(built: tuple[int, ...], installed: str) -> bool:
    """Whether the plan's (major, minor, patch) differs from the installed TensorRT's."""
    return built[:3] != version_tuple(installed)[:3]


def deserialize_failure(
    source: str, data: bytes, installed: str, errors: list[str]
) -> ModelLoadError:
    """The load error for a plan TensorRT would not deserialize."""
    built = plan_version(data)
    detail = f" (TensorRT said: {' / '.join(errors)})" if errors else ""
    if built is not None and versions_differ(built, installed):
        built_text = ".".join(str(n) for n in built)
        return ModelLoadError(
            f"{source} was built by TensorRT {built_text} but this server runs TensorRT "
            f"{installed}, and a TensorRT engine only loads in the version that built it: "
            f"rebuild {source} with TensorRT {installed}, {REBUILD_HINT}{detail}"
        )
    return ModelLoadError(
        f"TensorRT {installed} could not deserialize {source}: a plan only loads with the "
        "TensorRT version and on the GPU model it was built for (or it is not a TensorRT "
        f"plan); rebuild it here, {REBUILD_HINT}{detail}"
    )


def make_logger(trt: Any) -> Any:
    """A trt.ILogger that keeps error messages (to quote in load errors) and forwards all
    warnings and errors to Python logging."""
    severity = trt.ILogger.Severity

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, message: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(message)
                logger.error("TensorRT: %s", message)
            elif level == severity.WARNING:
                logger.warning("TensorRT: %s", message)

    return _Logger()


def deserialize_plan(trt: Any, data: bytes, source: str) -> tuple[Any, Any]:
    """(runtime, engine); the runtime must outlive the engine."""
    trt_logger = make_logger(trt)
    runtime = trt.Runtime(trt_logger)
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # some versions raise instead of returning None
        trt_logger.errors.append(str(exc))
        engine = None
    if engine is None:
        raise deserialize_failure(source, data, trt.__version__, trt_logger.errors)
    return runtime, engine


def engine_signature(trt: Any, engine: Any, source: str, profiles: list[int]) -> ModelSignature:
    """The engine's I/O tensors. The batch limit is the smallest first-dimension maximum over
    the inputs and the optimization `profiles` the instances use."""
    inputs, outputs = [], []
    limits = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dtype = engine.get_tensor_dtype(name)
        dtype_name = getattr(dtype, "name", str(dtype))
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        signature = TensorSignature(
            name, TRT_TO_CONFIG.get(dtype_name, mc.TYPE_INVALID), shape, f"trt.{dtype_name}"
        )
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            inputs.append(signature)
            if shape and shape[0] == -1:
                for profile in profiles:
                    maximum = engine.get_tensor_profile_shape(name, profile)[2]
                    limits.append(int(maximum[0]))
        else:
            outputs.append(signature)
    return ModelSignature(inputs, outputs, source, min(limits) if limits else None)


def instance_profiles(config: mc.ModelConfig, instance_name: str | None = None) -> list[int]:
    """Optimization profiles named by the instance group (`profile: ["1"]`), else [0]. Without
    an instance name, those of every group."""
    groups = list(config.instance_group)
    if instance_name is not None:
        matching = [g for g in groups if instance_name.startswith(f"{g.name}_")]
        groups = sorted(matching, key=lambda g: len(g.name), reverse=True)[:1]
    profiles: list[int] = []
    for group in groups:
        for text in group.profile:
            try:
                profiles.append(int(text))
            except ValueError:
                raise ModelLoadError(
                    f"instance_group '{group.name}': profile '{text}' is not a profile index"
                ) from None
    return sorted(set(profiles)) or [0]
