"""The model loading API of Triton's BLS: `pb_utils.load_model`, `unload_model`,
`is_model_ready`.

The server hands the calling instance an object with methods of the same names (the core's
ModelControl) in `InstanceContext.extras["model_control"]`; these functions call it on the
server loop and wait, so they are for synchronous model code (as in Triton, where they block).
Like BLS calls, they suspend a batch that runs inline instead of blocking the loop
(bls.wait_for_server).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from trident.runtime.errors import TridentError

from .bls import running_instance, wait_for_server
from .errors import TritonModelException


class ModelControl(Protocol):
    """What the server provides (trident.runtime.core.data_plane.ModelControl)."""

    async def load_model(
        self, name: str, config_json: str = "", files: dict[str, bytes] | None = None
    ) -> None: ...

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None: ...

    def model_ready(self, name: str, version: str = "") -> bool: ...


def _control() -> ModelControl:
    context = running_instance()
    control = context.extras.get("model_control")
    if control is None or context.loop is None:
        raise TritonModelException(
            "the model loading API (load_model, unload_model, is_model_ready) is not available "
            "to models in this server"
        )
    return control  # type: ignore[return-value]


def _wait(coroutine: Coroutine[Any, Any, Any], what: str) -> Any:
    try:
        return wait_for_server(coroutine, what, "call it from synchronous model code")
    except TridentError as exc:
        raise TritonModelException(exc.message) from None


def load_model(model_name: str, config: str = "", files: dict[str, bytes] | None = None) -> None:
    """Load (or reload) `model_name`; `config` is a JSON ModelConfig, `files` maps
    'file:<version>/<name>' to file contents, as in the repository load API."""
    control = _control()
    _wait(control.load_model(model_name, config, dict(files or {})), "pb_utils.load_model()")


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    control = _control()
    _wait(control.unload_model(model_name, unload_dependents), "pb_utils.unload_model()")


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    control = _control()

    async def ready() -> bool:
        return control.model_ready(model_name, model_version)

    return bool(_wait(ready(), "pb_utils.is_model_ready()"))
