"""Whether a Python model runs isolated, and the limits of its process, from its config.

    parameters { key: "isolation" value: { string_value: "process" } }        # or "none"
    parameters { key: "execution_timeout_ms" value: { string_value: "5000" } }
    parameters { key: "shm_ring_bytes" value: { string_value: "16777216" } }
    parameters { key: "busy_poll_us" value: { string_value: "1000" } }

The model's `isolation` wins over the server's `--python-isolation`, and its `busy_poll_us` over
`--python-isolation-busy-poll-us`.

Busy polling: a process that sleeps until its peer's message arrives pays a wake-up, and on a
virtual machine its first microseconds after it (cold caches, a vCPU being resumed) run several
times slower than the same code kept running: a round trip of two sleeping Python processes over
a socket pair cost about 3 times one where both poll (perf/README.md). So, for up to
`busy_poll_us`, the server's event loop polls the socket for the answer of the batch the process
runs (instance.py), and the process, after answering a batch that was the only one out, polls
for its next batch (stub.py), before either sleeps. The cost is CPU: up to that long per request
when requests come one at a time further apart than that. 0 turns it off. Decoupled models never
poll (their own threads send responses; a polling main thread would compete with them for the
GIL).
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
#: How long each side of an isolated instance polls for the other's next message (see above).
DEFAULT_BUSY_POLL_US = 1000
MAX_BUSY_POLL_US = 1_000_000

_default_mode = "none"
_default_busy_poll_us = DEFAULT_BUSY_POLL_US


def set_default_isolation(mode: str) -> None:
    """The server-wide mode (`--python-isolation`) for models whose config names none."""
    global _default_mode
    if mode not in ISOLATION_MODES:
        raise ValueError(f"python isolation must be one of {ISOLATION_MODES}, got {mode!r}")
    _default_mode = mode


def default_isolation() -> str:
    return _default_mode


def checked_busy_poll_us(microseconds: int) -> int:
    """`microseconds` when it is a busy poll the server accepts; ValueError naming the range."""
    if not 0 <= microseconds <= MAX_BUSY_POLL_US:
        raise ValueError(f"expected 0 to {MAX_BUSY_POLL_US} microseconds, got {microseconds}")
    return microseconds


def set_default_busy_poll_us(microseconds: int) -> None:
    """The server-wide `--python-isolation-busy-poll-us`, for models whose config names none."""
    global _default_busy_poll_us
    _default_busy_poll_us = checked_busy_poll_us(microseconds)


@dataclass(frozen=True, slots=True)
class IsolationSettings:
    """How one model's instances run."""

    mode: str = "none"
    #: 0: no limit. Past it, the instance's process is killed and its requests fail.
    execution_timeout_s: float = 0.0
    shm_ring_bytes: int = DEFAULT_SHM_RING_BYTES
    #: How long each side polls for the other's next message before sleeping (0: never).
    busy_poll_s: float = DEFAULT_BUSY_POLL_US / 1e6

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
        busy_poll_us = _integer(
            name, parameters, "busy_poll_us", _default_busy_poll_us, 0, MAX_BUSY_POLL_US
        )
        if mode != "process" and timeout_ms:
            raise ModelLoadError(
                f"model '{name}': execution_timeout_ms needs process isolation (an in-process "
                'execute cannot be stopped): add parameters { key: "isolation" value: '
                '{ string_value: "process" } }'
            )
        return cls(mode, timeout_ms / 1000.0, ring, busy_poll_us / 1e6)


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
