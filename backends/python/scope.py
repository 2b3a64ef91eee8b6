"""Which model instance the running code belongs to, without global mutable state.

The instance enters its scope (a ContextVar) around every call into model code: the import of
model.py, initialize, execute and finalize. BLS requests find their server there, and imports of
the model's sibling files find the model's folders there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trident.backends.base import InstanceContext

    from .inline import InlineRunner
    from .loader import SiblingImporter


@dataclass(frozen=True, slots=True)
class ModelScope:
    #: None while only the model's `auto_complete_config` runs (no instance exists yet).
    context: InstanceContext | None
    importer: SiblingImporter
    #: The instance's inline runner, when it may run inline: server calls (bls.py) suspend or
    #: refuse through it.
    inline: InlineRunner[Any] | None = None


_current: ContextVar[ModelScope | None] = ContextVar("trident_python_model", default=None)


def current_scope() -> ModelScope | None:
    return _current.get()


def enter(scope: ModelScope) -> Token[ModelScope | None]:
    """Start running as code of `scope`'s model; pass the token to `leave` (the hot path's
    cheaper form of `entered`)."""
    return _current.set(scope)


def leave(token: Token[ModelScope | None]) -> None:
    _current.reset(token)


@contextmanager
def entered(scope: ModelScope) -> Iterator[None]:
    """Run the body as code of `scope`'s model (in this thread or task only)."""
    token = _current.set(scope)
    try:
        yield
    finally:
        _current.reset(token)
