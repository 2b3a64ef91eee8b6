"""Whether a Python model runs isolated, and the limits of its process, from its config.

    parameters { key: "isolation" value: { string_value: "process" } }        # or "none"
    parameters { key: "execution_timeout_ms" value: { string_value: "5000" } }
    parameters { key: "shm_ring_bytes" value: { string_value: "16777216" } }

The model's `isolation` wins over the server's `--python-isolation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

ISOLATION_MODES = ("none", "process")
#: Bytes of each of an instance's two rings (server -> model, model -> server). Larger tensor
#: blocks go through a segment made for them, so this bounds memory, not tensor size.
DEFAULT_SHM_RING_BYTES = 16 * 1024 * 1024
MIN_SHM_RING_BYTES = 64 * 1024
MAX_SHM_RING_BYTES = 1024 * 1024 * 1024
#: execute may run this long at most (a day), whatever the config says.
MAX_EXECUTION_TIMEOUT_MS = 24 * 3600 * 1000

_default_mode = "none"


def set_default_isolation(mode: str) -> None:
    """The server-wide mode (`--python-isolation`) for models whose config names none."""
    global _default_mode
    if mode not in ISOLATION_MODES:
        raise ValueError(f"python isolation must be one of {ISOLATION_MODES}, got {mode!r}")
    _default_mode = mode


def default_isolation() -> str:
    return _default_mode


@dataclass(frozen=True, slots=True)
class IsolationSettings:
    """How one model's instances run."""

    mode: str = "none"
    #: 0: no limit. Past it, the instance's process is killed and its requests fail.
    execution_timeout_s: float = 0.0
    shm_ring_bytes: int = DEFAULT_SHM_RING_BYTES

    @property
    def isolated(self) -> bool:
        return self.mode == "process"

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> IsolationSettings:
        """Read and check the model's parameters; raise ModelLoadError naming the rule."""
        parameters = config.parameters
        name = config.name
        mode = _text(parameters, "isolation") or _default_mode
        if mode not in ISOLATION_MODES:
            raise ModelLoadError(
                f"model '{name}': parameter 'isolation' must be one of "
                f"{', '.join(ISOLATION_MODES)}, got '{mode}'"
            )
        timeout_ms = _integer(
            name, parameters, "execution_timeout_ms", 0, 0, MAX_EXECUTION_TIMEOUT_MS
        )
        ring = _integer(
            name,
            parameters,
            "shm_ring_bytes",
            DEFAULT_SHM_RING_BYTES,
            MIN_SHM_RING_BYTES,
            MAX_SHM_RING_BYTES,
        )
        if mode != "process" and timeout_ms:
            raise ModelLoadError(
                f"model '{name}': execution_timeout_ms needs process isolation (an in-process "
                'execute cannot be stopped): add parameters { key: "isolation" value: '
                '{ string_value: "process" } }'
            )
        return cls(mode, timeout_ms / 1000.0, ring)


def _text(parameters: Any, key: str) -> str:
    return parameters[key].string_value.strip().lower() if key in parameters else ""


def _integer(model: str, parameters: Any, key: str, default: int, low: int, high: int) -> int:
    text = _text(parameters, key)
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ModelLoadError(
            f"model '{model}': parameter '{key}' must be a whole number from {low} to {high}, "
            f"got '{text}'"
        )
    return int(text)
