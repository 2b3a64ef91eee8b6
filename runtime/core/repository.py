"""Model repositories on disk: which models exist, their version folders, and a fingerprint of
their files for poll mode. Knows nothing about loading."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from trident.runtime.errors import InvalidArgumentError, ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc


@dataclass(frozen=True, slots=True)
class ModelLocation:
    name: str
    repository: Path
    path: Path


class ModelRepository:
    """One or more repository folders, searched in the order given."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = [Path(root).resolve() for root in roots]

    def check_roots(self) -> None:
        for root in self.roots:
            if not root.is_dir():
                raise ModelLoadError(f"model repository '{root}' is not a folder")

    def scan(self) -> dict[str, ModelLocation]:
        """Every model folder in every repository. A name found in two repositories is an error
        for that name, reported when it is loaded."""
        found: dict[str, ModelLocation] = {}
        for root in self.roots:
            try:
                entries = sorted(os.scandir(root), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir() and not entry.name.startswith("."):
                    found.setdefault(entry.name, ModelLocation(entry.name, root, Path(entry.path)))
        return found

    def find(self, name: str) -> ModelLocation:
        matches = [root / name for root in self.roots if (root / name).is_dir()]
        if not matches:
            searched = ", ".join(str(root) for root in self.roots) or "(no repository given)"
            raise ModelLoadError(f"no model folder named '{name}' in {searched}")
        if len(matches) > 1:
            raise ModelLoadError(
                f"model '{name}' is in more than one repository ({', '.join(map(str, matches))}); "
                "model names must be unique across repositories"
            )
        return ModelLocation(name, matches[0].parent, matches[0])

    def repository_named(self, name: str) -> Path | None:
        for root in self.roots:
            if root.name == name or str(root) == name:
                return root
        return None


def version_folders(model_dir: Path) -> list[int]:
    """Numeric subfolders of a model folder, ascending."""
    versions = []
    try:
        for entry in os.scandir(model_dir):
            if entry.is_dir() and entry.name.isdigit():
                versions.append(int(entry.name))
    except OSError:
        return []
    return sorted(versions)


def versions_to_serve(config: mc.ModelConfig, available: list[int]) -> list[int]:
    """Apply the config's version_policy to the version folders found."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(available)
    if which == "specific":
        wanted = sorted(set(policy.specific.versions))
        missing = [v for v in wanted if v not in available]
        if missing:
            raise ModelLoadError(
                f"version_policy asks for version(s) {missing} but the model folder has "
                f"{available or 'no version folders'}"
            )
        return wanted
    count = policy.latest.num_versions if which == "latest" else 1
    return available[-max(count, 1) :] if available else []


def fingerprint(model_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file under the model folder: changes when anything does."""
    entries = []
    for folder, _, files in os.walk(model_dir):
        if "__pycache__" in folder:
            continue
        for filename in files:
            path = os.path.join(folder, filename)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            entries.append((path, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def write_override_files(name: str, files: Mapping[str, bytes | str]) -> Path:
    """Write `file:<path>` load parameters into a fresh temporary model folder."""
    root = Path(tempfile.mkdtemp(prefix="trident-override-"))
    model_dir = root / name
    model_dir.mkdir()
    for raw_path, content in files.items():
        relative = PurePosixPath(raw_path.removeprefix("file:"))
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            shutil.rmtree(root, ignore_errors=True)
            raise InvalidArgumentError(
                f"invalid model file path in load request: 'file:{raw_path}'"
            )
        target = model_dir.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else base64.b64decode(content))
    return model_dir
