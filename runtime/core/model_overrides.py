"""Model files sent with a load request (`file:<path>` parameters), written to a folder this
server creates, and removed with exactly that folder.

Everything here is client input: the number of files and their total size are bounded before
anything is written, each path must be a relative path of plain components, and every file is
created fresh (never through a symbolic link, never over another file). The folder removed later
is the one `tempfile.mkdtemp` returned, kept in `OverrideFolder.root`; nothing computed from a
client's name or path is ever removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trident.runtime.errors import InvalidArgumentError

from .json_depth import DEFAULT_MAX_JSON_DEPTH
from .model_names import check_model_name, model_folder

#: Default bound on the files of one load request.
DEFAULT_MAX_OVERRIDE_FILES = 1024
#: Default bound on their total size in bytes (the HTTP body limit's default).
DEFAULT_MAX_OVERRIDE_BYTES = 64 * 1024 * 1024
#: Longest `file:` path accepted, in bytes (Linux's PATH_MAX).
MAX_OVERRIDE_PATH_BYTES = 4096
#: Longest component of a `file:` path, in bytes.
MAX_OVERRIDE_COMPONENT_BYTES = 255
FILE_PREFIX = "file:"


@dataclass(frozen=True, slots=True)
class LoadRequestLimits:
    """How much one load request may send: files, their bytes, the config's JSON nesting."""

    #: `--model-load-max-files`.
    max_files: int = DEFAULT_MAX_OVERRIDE_FILES
    #: Total decoded bytes of the files (`--http-max-input-size`).
    max_bytes: int = DEFAULT_MAX_OVERRIDE_BYTES
    #: Nesting of the `config` JSON string (`--http-max-json-depth`, on both protocols).
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH

    def check_count(self, count: int) -> None:
        if count > self.max_files:
            raise InvalidArgumentError(
                f"a load request may send at most {self.max_files} files, this one sends {count}"
            )

    def check_total(self, total: int) -> None:
        if total > self.max_bytes:
            raise InvalidArgumentError(
                f"the files of a load request may hold at most {self.max_bytes} bytes in all, "
                f"this one holds {total}"
            )

    def check(self, files: Mapping[str, bytes]) -> None:
        """Check the count and total size of already decoded files."""
        self.check_count(len(files))
        self.check_total(sum(len(content) for content in files.values()))


@dataclass(frozen=True, slots=True)
class OverrideFolder:
    """A temporary model folder this server made for one load request."""

    #: What tempfile.mkdtemp returned: the only folder `remove` deletes.
    root: Path
    #: root/<model name>: the model folder the load reads.
    model_dir: Path

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def override_path_parts(raw_path: str) -> tuple[str, ...]:
    """The components of one `file:` path (given without its prefix), or InvalidArgumentError
    naming the rule broken."""
    path = raw_path

    def refuse(rule: str) -> InvalidArgumentError:
        shown = path if len(path) <= 80 else path[:80] + "..."
        return InvalidArgumentError(f"invalid model file path 'file:{shown}': {rule}")

    if not path:
        raise refuse("the path is empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_OVERRIDE_PATH_BYTES:
        raise refuse(f"a path must be at most {MAX_OVERRIDE_PATH_BYTES} bytes")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise refuse("the path must be relative to the model folder")
    if "\\" in path:
        raise refuse("use '/' to separate folders, not '\\'")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in path):
        raise refuse("the path must not contain NUL or other control characters")
    parts = tuple(path.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise refuse("each folder of the path must be a name, not '', '.' or '..'")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_OVERRIDE_COMPONENT_BYTES:
            raise refuse(
                f"each folder or file name must be at most {MAX_OVERRIDE_COMPONENT_BYTES} bytes"
            )
    return parts


def write_override_files(
    name: str, files: Mapping[str, bytes], limits: LoadRequestLimits | None = None
) -> OverrideFolder:
    """Write `file:<path>` load parameters into a fresh temporary model folder.

    Every path is checked before the folder is created; on any failure what was made is removed
    (the temporary root, nothing else) and InvalidArgumentError says why.
    """
    check_model_name(name)
    (limits or LoadRequestLimits()).check(files)
    checked = [(override_path_parts(raw), content) for raw, content in files.items()]
    root = Path(tempfile.mkdtemp(prefix="trident-override-")).resolve()
    folder = OverrideFolder(root, model_folder(root, name))
    try:
        folder.model_dir.mkdir(mode=0o700)
        for parts, content in checked:
            _write_one(folder.model_dir, parts, content)
    except BaseException:
        folder.remove()
        raise
    return folder


def _write_one(model_dir: Path, parts: tuple[str, ...], content: bytes) -> None:
    """Create one file under model_dir: new folders only as needed, no link followed."""
    shown = "/".join(parts)
    target = model_dir.joinpath(*parts)
    # The parts are plain names, so this holds by construction; checked again because a
    # mistake here would write outside the folder.
    if not target.resolve().is_relative_to(model_dir):
        raise InvalidArgumentError(f"invalid model file path 'file:{shown}': outside the model")
    folder = model_dir
    for part in parts[:-1]:
        folder = folder / part
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if folder.is_symlink() or not folder.is_dir():
                raise InvalidArgumentError(
                    f"invalid model file path 'file:{shown}': '{part}' is already a file"
                ) from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise InvalidArgumentError(
            f"invalid model file path 'file:{shown}': sent twice, or a folder of the same name"
        ) from None
    with os.fdopen(fd, "wb") as out:
        out.write(content)
