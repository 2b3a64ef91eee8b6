"""The engine's errors. Plain Python exceptions: the serving layer maps each one to its HTTP status
and gRPC code (the engine knows no wire format)."""

from __future__ import annotations


class InvalidSamplingParams(ValueError):
    """A sampling parameter or engine setting is unknown, of the wrong type or out of range.

    `field` names the offending key, so a client sees which one to fix (HTTP 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class PromptTooLong(ValueError):
    """The prompt leaves no room for one generated token within max_model_len (HTTP 400)."""


class EngineOverloaded(Exception):
    """The waiting queue is full (`EngineConfig.max_waiting`): HTTP 429 / gRPC UNAVAILABLE."""


class EngineStopped(RuntimeError):
    """The engine was shut down, or its thread died; no new request is accepted."""
