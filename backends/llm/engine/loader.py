"""Reading a model folder: a Hugging Face layout (config.json, *.safetensors, tokenizer files) or
one GGUF file (read by transformers with the `gguf` package and dequantized to fp32)."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trident.backends.llm.engine.models import ModelArch, arch_from_config

#: Largest config.json / generation_config.json read (they are a few KB).
MAX_CONFIG_BYTES = 1 << 20


class ModelLoadFailed(ValueError):
    """The folder does not hold a model this engine can load; the message says what is wrong."""


@dataclass
class LoadedModel:
    name: str
    arch: ModelArch
    state: Mapping[str, torch.Tensor]
    tokenizer: Any
    eos_token_ids: list[int]


def _read_json(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelLoadFailed(f"{path.name} is larger than {MAX_CONFIG_BYTES} bytes")
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ModelLoadFailed(f"{path.name} must hold a JSON object")
    return value


def _eos_ids(arch: ModelArch, tokenizer: Any, generation: Mapping[str, Any]) -> list[int]:
    ids: list[int] = list(arch.eos_token_ids)
    gen = generation.get("eos_token_id")
    if isinstance(gen, int):
        ids.append(gen)
    elif isinstance(gen, list):
        ids += [int(t) for t in gen]
    tok_eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(tok_eos, int):
        ids.append(tok_eos)
    return list(dict.fromkeys(ids))


def _gguf_path(folder: Path, gguf_file: str) -> Path:
    # The file name comes from configuration: one path component inside the folder, no more.
    if not gguf_file or Path(gguf_file).name != gguf_file or gguf_file in (".", ".."):
        raise ModelLoadFailed(f"gguf_file must be a file name inside {folder}, got {gguf_file!r}")
    path = folder / gguf_file
    if not path.is_file():
        raise ModelLoadFailed(f"GGUF file {path} does not exist")
    return path


def from_transformers(hf_model: Any, tokenizer: Any, name: str) -> LoadedModel:
    """Take the weights and config of a transformers model already in memory (only its state
    dict is used: the engine runs its own layers)."""
    arch = arch_from_config(hf_model.config.to_dict())
    state = dict(hf_model.state_dict())
    gen = hf_model.generation_config.to_dict() if hf_model.generation_config else {}
    return LoadedModel(name, arch, state, tokenizer, _eos_ids(arch, tokenizer, gen))


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers draws progress bars while it reads a GGUF file; in a server's log they are
    noise (one line per redraw when the log is a file), so they are off while it loads."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    drawing = hf_logging.is_progress_bar_enabled()
    original = gguf_utils.tqdm
    hf_logging.disable_progress_bar()
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original
        if drawing:
            hf_logging.enable_progress_bar()


def load_model_dir(folder: Path, gguf_file: str | None = None) -> LoadedModel:
    """Read weights, architecture and tokenizer from `folder` (no network access)."""
    from transformers import AutoTokenizer

    if not folder.is_dir():
        raise ModelLoadFailed(f"model folder {folder} does not exist")
    if gguf_file is not None:
        from transformers import AutoModelForCausalLM

        path = _gguf_path(folder, gguf_file)
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
            hf_model = AutoModelForCausalLM.from_pretrained(
                str(folder), gguf_file=gguf_file, dtype=torch.float32
            )
        return from_transformers(hf_model, tokenizer, path.stem)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadFailed(f"{folder} has no config.json (and no gguf_file was given)")
    arch = arch_from_config(_read_json(config_path))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadFailed(f"{folder} has no *.safetensors weights")
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    gen_path = folder / "generation_config.json"
    gen = _read_json(gen_path) if gen_path.is_file() else {}
    return LoadedModel(folder.name, arch, state, tokenizer, _eos_ids(arch, tokenizer, gen))
