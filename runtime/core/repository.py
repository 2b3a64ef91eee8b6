"""Model repositories on disk: which models exist, their version folders, and a fingerprint of
their files for poll mode. Knows nothing about loading.

A folder whose name breaks the model-name rule (core/model_names.py) is reported by
`rejected_folders` and in the repository index, and never served."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

from .model_names import model_folder, model_name_problem

logger = logging.getLogger("trident.models")


@dataclass(frozen=True, slots=True)
class ModelLocation:
    name: str
    repository: Path
    path: Path


class ModelRepository:
    """One or more repository folders, searched in the order given."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = [Path(root).resolve() for root in roots]
        #: Folder names already warned about, so a poll loop does not repeat the warning.
        self._warned: set[str] = set()

    def check_roots(self) -> None:
        for root in self.roots:
            if not root.is_dir():
                raise ModelLoadError(f"model repository '{root}' is not a folder")

    def scan(self) -> dict[str, ModelLocation]:
        """Every model folder in every repository whose name is a valid model name. A name
        found in two repositories is an error for that name, reported when it is loaded."""
        found: dict[str, ModelLocation] = {}
        for root, entry in self._model_folders():
            if model_name_problem(entry.name) is None:
                found.setdefault(entry.name, ModelLocation(entry.name, root, Path(entry.path)))
        return found

    def rejected_folders(self) -> dict[str, str]:
        """{folder name: the rule it breaks} for model folders that are not served."""
        rejected: dict[str, str] = {}
        for root, entry in self._model_folders():
            problem = model_name_problem(entry.name)
            if problem is not None:
                rejected.setdefault(entry.name, problem)
                if entry.name not in self._warned:
                    self._warned.add(entry.name)
                    logger.warning(
                        "model folder %r in %s is not served: %s", entry.name, root, problem
                    )
        return rejected

    def _model_folders(self) -> list[tuple[Path, os.DirEntry[str]]]:
        folders: list[tuple[Path, os.DirEntry[str]]] = []
        for root in self.roots:
            try:
                entries = sorted(os.scandir(root), key=lambda e: e.name)
            except OSError:
                continue
            folders.extend(
                (root, entry)
                for entry in entries
                if not entry.name.startswith(".") and entry.is_dir()
            )
        return folders

    def find(self, name: str) -> ModelLocation:
        """The folder of model `name`; InvalidArgumentError for a name that breaks the rule."""
        candidates = [model_folder(root, name) for root in self.roots]
        matches = [path for path in candidates if path.is_dir()]
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
