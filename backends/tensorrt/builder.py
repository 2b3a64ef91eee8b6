"""Building a TensorRT engine from the version folder's model.onnx, once, and caching it.

Enabled with `parameters { key: "build_engine_from_onnx" value: { string_value: "true" } }`.
The engine is cached under `engine_cache_dir` (a parameter; default
$XDG_CACHE_HOME/trident/tensorrt, i.e. ~/.cache/trident/tensorrt), not in the model repository,
so that writing it cannot trigger a repository reload. The cache file name is a hash of the ONNX
file, the TensorRT version, the GPU and the build options, so a change in any of them builds a
new engine.

Build options (model `parameters`, names as Triton's onnxruntime TensorRT accelerator):
- `precision_mode`: FP32 (default) or FP16;
- `max_workspace_size_bytes`: the builder's workspace memory limit;
- `trt_profile_min_shapes` / `trt_profile_opt_shapes` / `trt_profile_max_shapes`:
  "input:1x3x224x224,other:1x16" ranges for dynamic dimensions. Without them a dynamic first
  dimension gets the range 1..max_batch_size (auto-complete's default when the config has none),
  and any other dynamic dimension is an error that names these keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from trident.backends.model_signature import DEFAULT_MAX_BATCH_SIZE
from trident.backends.parameters import bool_parameter, int_parameter, model_parameters
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

from .plan import make_logger, version_tuple

logger = logging.getLogger(__name__)

BUILD_KEY = "build_engine_from_onnx"
ONNX_FILENAME = "model.onnx"
_PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")


def builds_from_onnx(config: mc.ModelConfig) -> bool:
    return bool_parameter(model_parameters(config), BUILD_KEY, False)


def parse_profile_shapes(key: str, text: str) -> dict[str, tuple[int, ...]]:
    """ "x:1x3x224x224,y:1x16" -> {"x": (1, 3, 224, 224), "y": (1, 16)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, dims = item.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            raise ModelLoadError(
                f"parameter '{key}': '{item}' is not NAME:D1xD2x... (e.g. input:1x3x224x224)"
            ) from None
    return shapes


def build_options(config: mc.ModelConfig) -> dict[str, Any]:
    """The options that shape the engine, checked; part of the cache key."""
    params = model_parameters(config)
    precision = params.get("precision_mode", "FP32").upper()
    if precision not in ("FP32", "FP16"):
        raise ModelLoadError(f"parameter 'precision_mode' must be FP32 or FP16, not '{precision}'")
    profiles = {key: parse_profile_shapes(key, params.get(key, "")) for key in _PROFILE_KEYS}
    return {
        "precision": precision,
        "workspace": int_parameter(params, "max_workspace_size_bytes", 0, minimum=0),
        "max_batch_size": config.max_batch_size or DEFAULT_MAX_BATCH_SIZE,
        "profiles": {key: sorted(value.items()) for key, value in profiles.items()},
    }


def cache_dir(config: mc.ModelConfig) -> Path:
    configured = model_parameters(config).get("engine_cache_dir")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trident" / "tensorrt"


def engine_cache_path(config: mc.ModelConfig, onnx_path: Path, trt_version: str, gpu: str) -> Path:
    digest = hashlib.sha256()
    with onnx_path.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(repr((trt_version, gpu, build_options(config))).encode())
    return cache_dir(config) / f"{config.name or 'model'}-{digest.hexdigest()[:24]}.plan"


def engine_path(config: mc.ModelConfig, version_dir: Path, trt: Any, gpu: str) -> Path:
    """The plan to load: version_dir/model.plan, or the cached engine built from model.onnx."""
    if not builds_from_onnx(config):
        return version_dir / (config.default_model_filename or "model.plan")
    onnx_path = version_dir / ONNX_FILENAME
    if not onnx_path.is_file():
        raise ModelLoadError(f"{BUILD_KEY} is set but {onnx_path} does not exist")
    cached = engine_cache_path(config, onnx_path, trt.__version__, gpu)
    if cached.is_file():
        return cached
    logger.info("building a TensorRT engine from %s (cached as %s)", onnx_path, cached)
    data = build_engine(trt, onnx_path, config)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent load never reads half an engine.
        with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, cached)
    except OSError as exc:
        raise ModelLoadError(
            f"cannot write the TensorRT engine cache {cached}: {exc.strerror}; set the "
            "'engine_cache_dir' parameter to a writable folder"
        ) from None
    return cached


def build_engine(trt: Any, onnx_path: Path, config: mc.ModelConfig) -> bytes:
    options = build_options(config)
    trt_logger = make_logger(trt)
    builder = trt.Builder(trt_logger)
    flags = 0
    if version_tuple(trt.__version__)[:1] < (10,):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelLoadError(
            f"TensorRT cannot parse {onnx_path.name}: {' / '.join(errors) or 'unknown error'}"
        )
    build_config = builder.create_builder_config()
    if options["workspace"]:
        build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options["workspace"])
    if options["precision"] == "FP16":
        build_config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    if _set_profile_shapes(profile, network, options):
        build_config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, build_config)
    if serialized is None:
        detail = " / ".join(trt_logger.errors) or "see the server log"
        raise ModelLoadError(f"TensorRT could not build an engine from {onnx_path.name}: {detail}")
    return bytes(serialized)


def _set_profile_shapes(profile: Any, network: Any, options: dict[str, Any]) -> bool:
    """Fill the optimization profile for every dynamic input; False when there is none."""
    ranges = [dict(options["profiles"][key]) for key in _PROFILE_KEYS]
    max_batch = options["max_batch_size"]
    dynamic = False
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = tuple(int(d) for d in tensor.shape)
        if -1 not in shape:
            continue
        dynamic = True
        given = [r.get(tensor.name) for r in ranges]
        if all(g is not None for g in given):
            profile.set_shape(tensor.name, *given)
        elif shape[0] == -1 and -1 not in shape[1:]:
            rest = shape[1:]
            profile.set_shape(tensor.name, (1, *rest), (max_batch, *rest), (max_batch, *rest))
        else:
            raise ModelLoadError(
                f"input '{tensor.name}' of the ONNX model has variable dimensions {list(shape)}; "
                "give their ranges with the parameters trt_profile_min_shapes, "
                "trt_profile_opt_shapes and trt_profile_max_shapes (e.g. "
                f"'{tensor.name}:1x3x224x224')"
            )
    return dynamic
