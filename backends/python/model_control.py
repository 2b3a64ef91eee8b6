"""The model loading API of Triton's BLS: `pb_utils.load_model`, `unload_model`,
`is_model_ready`.

The server hands the calling instance an object with methods of the same names (the core's
ModelControl) in `InstanceContext.extras["model_control"]`; these functions call it on the
server loop and wait, so they are for synchronous model code (as in Triton, where they block).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from trident.runtime.errors import TridentError

from .bls import running_instance
from .errors import TritonModelException


class ModelControl(Protocol):
    """What the server provides (trident.runtime.core.data_plane.ModelControl)."""

    async def load_model(
        self, name: str, config_json: str = "", files: dict[str, bytes] | None = None
    ) -> None: ...

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None: ...

    def model_ready(self, name: str, version: str = "") -> bool: ...


def _control() -> tuple[ModelControl, asyncio.AbstractEventLoop]:
    context = running_instance()
    control = context.extras.get("model_control")
    if control is None or context.loop is None:
        raise TritonModelException(
            "the model loading API (load_model, unload_model, is_model_ready) is not available "
            "to models in this server"
        )
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is context.loop:
        raise TritonModelException(
            "load_model, unload_model and is_model_ready wait for the server, so they cannot be "
            "called from an `async def execute`; call them from synchronous model code"
        )
    return control, context.loop  # type: ignore[return-value]


def _wait(coroutine: Any, loop: asyncio.AbstractEventLoop) -> Any:
    try:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()
    except TridentError as exc:
        raise TritonModelException(exc.message) from None


def load_model(model_name: str, config: str = "", files: dict[str, bytes] | None = None) -> None:
    """Load (or reload) `model_name`; `config` is a JSON ModelConfig, `files` maps
    'file:<version>/<name>' to file contents, as in the repository load API."""
    control, loop = _control()
    _wait(control.load_model(model_name, config, dict(files or {})), loop)


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    control, loop = _control()
    _wait(control.unload_model(model_name, unload_dependents), loop)


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    control, loop = _control()

    async def ready() -> bool:
        return control.model_ready(model_name, model_version)

    return bool(_wait(ready(), loop))
