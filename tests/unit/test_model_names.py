"""The one model-name rule, and the one function that turns a name into a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from trident.runtime.core.model_names import (
    MAX_MODEL_NAME_BYTES,
    check_model_name,
    model_folder,
    model_name_problem,
)
from trident.runtime.core.repository import ModelRepository
from trident.runtime.errors import InvalidArgumentError, ModelLoadError


@pytest.mark.parametrize(
    "name",
    ["simple", "with space", "a..b", "..hidden-ish", "ünïcode_模型", "x" * MAX_MODEL_NAME_BYTES],
)
def test_single_component_names_are_accepted(name: str) -> None:
    assert model_name_problem(name) is None
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "must not be empty"),
        (".", "must not be '.' or '..'"),
        ("..", "must not be '.' or '..'"),
        ("../../somewhere", "single path component"),
        ("a/b", "single path component"),
        ("/etc", "single path component"),
        ("..\\..\\x", "single path component"),
        ("a\x00b", "NUL or other control characters"),
        ("line\nbreak", "U+000A"),
        ("del\x7f", "U+007F"),
        ("x" * (MAX_MODEL_NAME_BYTES + 1), f"at most {MAX_MODEL_NAME_BYTES} bytes"),
        ("é" * 128, "this one has 256"),  # 128 characters, 256 bytes in UTF-8
    ],
)
def test_names_that_are_not_one_component_are_refused_with_the_rule(name: str, rule: str) -> None:
    problem = model_name_problem(name)
    assert problem is not None and rule in problem
    with pytest.raises(InvalidArgumentError, match="invalid model name") as raised:
        check_model_name(name)
    assert rule in str(raised.value)
    assert raised.value.http_status == 400 and raised.value.grpc_code == "INVALID_ARGUMENT"


def test_model_folder_is_the_only_join_and_checks_first(tmp_path: Path) -> None:
    assert model_folder(tmp_path, "m") == tmp_path / "m"
    with pytest.raises(InvalidArgumentError):
        model_folder(tmp_path, "../m")


def test_repository_find_refuses_traversal_even_when_the_target_exists(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (tmp_path / "outside" / "1").mkdir(parents=True)
    repository = ModelRepository([repo])
    assert repository.find("m").path == (repo / "m").resolve()
    with pytest.raises(InvalidArgumentError, match="single path component"):
        repository.find("../outside")
    with pytest.raises(ModelLoadError, match="no model folder named 'outside'"):
        repository.find("outside")


def test_folders_with_invalid_names_are_reported_not_served(tmp_path: Path) -> None:
    (tmp_path / "good" / "1").mkdir(parents=True)
    (tmp_path / "bad\x01name" / "1").mkdir(parents=True)
    (tmp_path / "back\\slash" / "1").mkdir(parents=True)
    (tmp_path / ".hidden" / "1").mkdir(parents=True)
    repository = ModelRepository([tmp_path])
    assert list(repository.scan()) == ["good"]
    rejected = repository.rejected_folders()
    assert set(rejected) == {"bad\x01name", "back\\slash"}
    assert "U+0001" in rejected["bad\x01name"]
    assert "single path component" in rejected["back\\slash"]
