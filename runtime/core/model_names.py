"""The one rule for model names, and the one place a model name becomes a file path.

A model name arrives from clients (the repository API over HTTP and gRPC, an ensemble's steps, a
BLS call) and from folder names on disk. Wherever a name is joined to a folder it must stay a
single path component inside that folder, so every such join goes through `model_folder`, which
checks the name first. The rule (documented in docs/model-configuration.md):

- not empty, and at most `MAX_MODEL_NAME_BYTES` bytes in UTF-8 (a common file-name limit);
- not `.` or `..`;
- no `/` or `\\` (no path separators on any platform);
- no NUL and no other control character (U+0000-U+001F, U+007F-U+009F).
"""

from __future__ import annotations

import re
from pathlib import Path

from trident.runtime.errors import InvalidArgumentError

#: Longest model name accepted, in UTF-8 bytes (ext4, XFS and NTFS allow 255 per file name).
MAX_MODEL_NAME_BYTES = 255

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot be a model name (a sentence naming the rule), or None when it can."""
    if not name:
        return "a model name must not be empty"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_MODEL_NAME_BYTES:
        return (
            f"a model name must be at most {MAX_MODEL_NAME_BYTES} bytes in UTF-8, this one "
            f"has {size}"
        )
    if name in (".", ".."):
        return "a model name must not be '.' or '..'"
    if "/" in name or "\\" in name:
        return "a model name must be a single path component, without '/' or '\\'"
    control = _CONTROL.search(name)
    if control is not None:
        return (
            "a model name must not contain NUL or other control characters "
            f"(found U+{ord(control.group()):04X})"
        )
    return None


def check_model_name(name: str) -> str:
    """Return `name`, or raise InvalidArgumentError (400 / INVALID_ARGUMENT) naming the rule."""
    problem = model_name_problem(name)
    if problem is not None:
        raise InvalidArgumentError(f"invalid model name {_shown(name)}: {problem}")
    return name


def model_folder(root: Path, name: str) -> Path:
    """The folder of model `name` under `root`: the only way a model name becomes a path."""
    return root / check_model_name(name)


def _shown(name: str) -> str:
    """The name as it can be shown in a message: escaped, and cut when very long."""
    text = name if len(name) <= 80 else name[:80] + "..."
    return repr(text)
