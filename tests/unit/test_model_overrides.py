"""Files sent with a load request: written under a temporary root only, and removed with it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from trident.runtime.core.model_overrides import (
    LoadRequestLimits,
    override_path_parts,
    write_override_files,
)
from trident.runtime.errors import InvalidArgumentError


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile.mkdtemp makes its folders here, beside a sentinel that must survive."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    (tmp_path / "sentinel").write_text("keep")
    (temp / "sentinel").write_text("keep")
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return tmp_path


def _all_files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


def test_files_land_in_a_fresh_root_and_remove_deletes_exactly_it(sandbox: Path) -> None:
    folder = write_override_files("m", {"1/model.py": b"x = 1", "1/data/w.bin": b"\0\1"})
    assert folder.root.parent == (sandbox / "tmp").resolve()
    assert folder.model_dir == folder.root / "m"
    assert (folder.model_dir / "1" / "model.py").read_bytes() == b"x = 1"
    assert (folder.model_dir / "1" / "data" / "w.bin").read_bytes() == b"\0\1"
    folder.remove()
    assert not folder.root.exists()
    assert (sandbox / "sentinel").exists() and (sandbox / "tmp" / "sentinel").exists()


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("C:/x", "relative"),
        ("../x", "'', '.' or '..'"),
        ("1/../../x", "'', '.' or '..'"),
        ("1/./model.py", "'', '.' or '..'"),
        ("1//model.py", "'', '.' or '..'"),
        ("1\\model.py", "not '\\'"),
        ("1/mo\x00del.py", "control characters"),
        ("1/" + "a" * 256, "at most 255 bytes"),
        ("a/" * 2100, "at most 4096 bytes"),
    ],
)
def test_bad_file_paths_are_refused_with_the_rule(path: str, rule: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid model file path") as raised:
        override_path_parts(path)
    assert rule in str(raised.value)


def test_a_bad_name_or_path_writes_nothing_anywhere(sandbox: Path) -> None:
    before = _all_files(sandbox)
    with pytest.raises(InvalidArgumentError, match="single path component"):
        write_override_files("../../escape", {"1/model.py": b"x"})
    with pytest.raises(InvalidArgumentError, match="invalid model file path"):
        write_override_files("m", {"1/model.py": b"x", "../escape.py": b"x"})
    assert _all_files(sandbox) == before


def test_duplicate_and_clashing_paths_fail_and_clean_up_their_root_only(sandbox: Path) -> None:
    before = _all_files(sandbox)
    with pytest.raises(InvalidArgumentError, match="already a file"):
        write_override_files("m", {"1": b"file", "1/model.py": b"x"})
    with pytest.raises(InvalidArgumentError, match="sent twice, or a folder"):
        write_override_files("m", {"1/model.py": b"x", "1": b"file"})
    assert _all_files(sandbox) == before


def test_count_and_total_size_are_bounded_before_writing(sandbox: Path) -> None:
    before = _all_files(sandbox)
    limits = LoadRequestLimits(max_files=2, max_bytes=10)
    with pytest.raises(InvalidArgumentError, match="at most 2 files, this one sends 3"):
        write_override_files("m", {"a": b"", "b": b"", "c": b""}, limits)
    with pytest.raises(InvalidArgumentError, match="at most 10 bytes in all, this one holds 11"):
        write_override_files("m", {"a": b"x" * 5, "b": b"y" * 6}, limits)
    assert _all_files(sandbox) == before
    write_override_files("m", {"a": b"x" * 5, "b": b"y" * 5}, limits).remove()
