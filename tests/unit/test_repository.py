import pytest

from trident.runtime.core import model_config
from trident.runtime.core.repository import (
    ModelRepository,
    fingerprint,
    version_folders,
    versions_to_serve,
)
from trident.runtime.errors import ModelLoadError


def _config(text: str):
    config = model_config.parse_config_text(text)
    model_config.normalize(config, "m", "python")
    return config


def test_version_policies():
    available = [1, 2, 5]
    assert versions_to_serve(_config(""), available) == [5]
    assert versions_to_serve(
        _config("version_policy { latest { num_versions: 2 } }"), available
    ) == [2, 5]
    assert versions_to_serve(_config("version_policy { all { } }"), available) == [1, 2, 5]
    assert versions_to_serve(
        _config("version_policy { specific { versions: [1, 5] } }"), available
    ) == [1, 5]
    with pytest.raises(ModelLoadError, match=r"\[3\]"):
        versions_to_serve(_config("version_policy { specific { versions: [3] } }"), available)


def test_scan_versions_and_duplicates(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in ("m/1", "m/2", "m/notaversion", "n/3"):
        (first / folder).mkdir(parents=True)
    (second / "n" / "1").mkdir(parents=True)
    (second / "o" / "1").mkdir(parents=True)
    repository = ModelRepository([first, second])
    assert sorted(repository.scan()) == ["m", "n", "o"]
    assert version_folders(first / "m") == [1, 2]
    assert repository.find("o").path == (second / "o").resolve()
    with pytest.raises(ModelLoadError, match="more than one repository"):
        repository.find("n")
    with pytest.raises(ModelLoadError, match="no model folder named 'zz'"):
        repository.find("zz")


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    (tmp_path / "1").mkdir()
    model_file = tmp_path / "1" / "model.py"
    model_file.write_text("a = 1\n")
    before = fingerprint(tmp_path)
    model_file.write_text("a = 22\n")
    assert fingerprint(tmp_path) != before
