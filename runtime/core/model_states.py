"""The names the model manager uses for where a model version stands and how the repository is
controlled. Both are `StrEnum`s: a member is its string, so what reaches the wire (the repository
index's `state`, the `--model-control-mode` values) is the same text Triton uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class ModelState(StrEnum):
    """A model version's state, as the repository index reports it."""

    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


class ControlMode(StrEnum):
    """How the model repository is controlled (`--model-control-mode`)."""

    #: Load every model at start and never change.
    NONE = "none"
    #: Also load, reload and unload models as the repository changes on disk.
    POLL = "poll"
    #: Load only the models named at start; then load and unload through the repository API.
    EXPLICIT = "explicit"


#: The reason an UNAVAILABLE version gives once it was unloaded on purpose.
UNLOADED_REASON = "unloaded"


@dataclass(frozen=True, slots=True)
class RepositoryIndexEntry:
    """One row of the repository index: a model version (or a model without versions)."""

    name: str
    version: str = ""
    #: Empty for a model the server never tried to load, as in Triton.
    state: ModelState | Literal[""] = ""
    reason: str = ""
