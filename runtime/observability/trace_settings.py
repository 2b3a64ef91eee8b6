"""Trace settings (the trace extension): global values and per-model overrides.

Values are lists of strings, as the protocol carries them (`trace_level` may hold several).
A per-model update with a null value clears that model's override for the key.
"""

from __future__ import annotations

from trident.runtime.errors import InvalidArgumentError

TRACE_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
DEFAULTS: dict[str, list[str]] = {
    "trace_level": ["OFF"],
    "trace_rate": ["1000"],
    "trace_count": ["-1"],
    "log_frequency": ["0"],
    "trace_file": [""],
    "trace_mode": ["triton"],
}


class TraceSettings:
    def __init__(self) -> None:
        self._global: dict[str, list[str]] = {k: list(v) for k, v in DEFAULTS.items()}
        self._per_model: dict[str, dict[str, list[str]]] = {}

    def get(self, model: str = "") -> dict[str, list[str]]:
        settings = {k: list(v) for k, v in self._global.items()}
        if model:
            settings.update({k: list(v) for k, v in self._per_model.get(model, {}).items()})
        return settings

    def update(self, model: str, updates: dict[str, list[str] | None]) -> dict[str, list[str]]:
        for key, values in updates.items():
            if key not in DEFAULTS:
                raise InvalidArgumentError(
                    f"unknown trace setting '{key}'; known settings: {', '.join(DEFAULTS)}"
                )
            if values is None:
                continue
            if key == "trace_level":
                for level in values:
                    if level not in TRACE_LEVELS:
                        raise InvalidArgumentError(
                            f"trace_level '{level}' is not one of {', '.join(TRACE_LEVELS)}"
                        )
            elif key in ("trace_rate", "trace_count", "log_frequency"):
                if len(values) != 1 or not values[0].lstrip("-").isdigit():
                    raise InvalidArgumentError(f"trace setting '{key}' must be one integer")
            elif key == "trace_mode" and values != ["triton"]:
                raise InvalidArgumentError("trace_mode must be 'triton'")
        target = self._per_model.setdefault(model, {}) if model else self._global
        for key, values in updates.items():
            if values is None:
                if model:
                    target.pop(key, None)
                else:
                    target[key] = list(DEFAULTS[key])
            else:
                target[key] = list(values)
        return self.get(model)
