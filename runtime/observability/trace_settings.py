"""Trace settings (the trace extension): global values and per-model overrides, as the trace
settings API and `--trace-config` give them, put in force by the Tracer (tracing.py).

Values are lists of strings, as the protocol carries them (`trace_level` may hold several). A
per-model update with a null value clears that model's override for the key; a global one goes
back to the startup value. As in current Triton releases, `trace_file` is set only at startup
(`--trace-config triton,file=PATH`): the API refuses to point the server at another file, so a
client cannot make the server write where it chooses.
"""

from __future__ import annotations

from trident.runtime.errors import InvalidArgumentError, UnsupportedError

from .tracing import TraceConfig, TraceLevel, Tracer

TRACE_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
DEFAULTS: dict[str, list[str]] = {
    "trace_level": ["OFF"],
    "trace_rate": ["1000"],
    "trace_count": ["-1"],
    "log_frequency": ["0"],
    "trace_file": [""],
    "trace_mode": ["triton"],
}
#: Integer settings and their bounds (Triton's types: uint32 rate and frequency, int32 count).
_INTEGERS = {
    "trace_rate": (0, 2**32 - 1),
    "trace_count": (-1, 2**31 - 1),
    "log_frequency": (0, 2**32 - 1),
}


class TraceSettings:
    """The settings store behind the trace settings API; `tracer` samples by them."""

    def __init__(self, startup: dict[str, list[str]] | None = None) -> None:
        self.tracer = Tracer()
        self._startup = {k: list(v) for k, v in DEFAULTS.items()}
        self._startup.update({k: list(v) for k, v in (startup or {}).items()})
        self._global = {k: list(v) for k, v in self._startup.items()}
        self._per_model: dict[str, dict[str, list[str]]] = {}
        self._apply()

    def get(self, model: str = "") -> dict[str, list[str]]:
        settings = self._merged(model)
        # Triton reports the count still left to the setting in force, not the one set.
        settings["trace_count"] = [str(self.tracer.remaining(model))]
        return settings

    def update(self, model: str, updates: dict[str, list[str] | None]) -> dict[str, list[str]]:
        for key, values in updates.items():
            _check(key, values)
        target = {
            k: list(v)
            for k, v in (self._per_model.get(model, {}) if model else self._global).items()
        }
        for key, values in updates.items():
            if values is None:
                if model:
                    target.pop(key, None)
                else:
                    target[key] = list(self._startup[key])
            else:
                target[key] = list(values)
        merged = {**self._global, **target} if model else target
        config = _config(merged)
        reason = config.invalid_reason()
        if reason is not None and config.level:
            raise InvalidArgumentError(f"Attempting to set invalid trace setting: {reason}")
        if model:
            self._per_model[model] = target
            if not target:
                del self._per_model[model]
        else:
            self._global = target
        self._apply()
        return self.get(model)

    def close(self) -> None:
        """The server stops: write the traces collected so far."""
        self.tracer.close()

    def _merged(self, model: str) -> dict[str, list[str]]:
        settings = {k: list(v) for k, v in self._global.items()}
        if model:
            settings.update({k: list(v) for k, v in self._per_model.get(model, {}).items()})
        return settings

    def _apply(self) -> None:
        self.tracer.configure(
            _config(self._global),
            {model: _config(self._merged(model)) for model in self._per_model},
        )


def _check(key: str, values: list[str] | None) -> None:
    if key not in DEFAULTS:
        raise InvalidArgumentError(
            f"unknown trace setting '{key}'; known settings: {', '.join(DEFAULTS)}"
        )
    if key == "trace_file":
        raise UnsupportedError("trace file location can not be updated through network protocol")
    if values is None:
        return
    if key == "trace_level":
        for level in values:
            if level not in TRACE_LEVELS:
                raise InvalidArgumentError(
                    f"trace_level '{level}' is not one of {', '.join(TRACE_LEVELS)}"
                )
        if "OFF" in values and len(values) > 1:
            raise InvalidArgumentError("trace_level 'OFF' cannot be combined with other levels")
    elif key in _INTEGERS:
        low, high = _INTEGERS[key]
        if len(values) != 1 or not _is_int(values[0]) or not low <= int(values[0]) <= high:
            raise InvalidArgumentError(
                f"trace setting '{key}' must be one integer from {low} to {high}"
            )
    elif key == "trace_mode" and values != ["triton"]:
        raise InvalidArgumentError("trace_mode must be 'triton'")


def _is_int(text: str) -> bool:
    return 0 < len(text) <= 12 and text.lstrip("-").isdigit() and text.count("-") <= 1


def _config(settings: dict[str, list[str]]) -> TraceConfig:
    level = TraceLevel.OFF
    for name in settings["trace_level"]:
        if name != "OFF":
            level |= TraceLevel[name]
    return TraceConfig(
        level=level,
        rate=int(settings["trace_rate"][0]),
        count=int(settings["trace_count"][0]),
        log_frequency=int(settings["log_frequency"][0]),
        file=settings["trace_file"][0],
    )


# ------------------------------------------------------------------------------ --trace-config

_LEVEL_WORDS = {
    "false": None,
    "off": None,
    "true": "TIMESTAMPS",
    "on": "TIMESTAMPS",
    "min": "TIMESTAMPS",
    "max": "TIMESTAMPS",
    "timestamps": "TIMESTAMPS",
    "tensors": "TENSORS",
}
_GLOBAL_KEYS = {"rate": "trace_rate", "count": "trace_count", "level": "trace_level"}
#: Triton spells it log-frequency; log_frequency (the API's name) is accepted too.
_TRITON_KEYS = {
    "file": "trace_file",
    "log-frequency": "log_frequency",
    "log_frequency": "log_frequency",
}


def parse_trace_config(arguments: list[str]) -> dict[str, list[str]]:
    """tritonserver's `--trace-config` values (`[MODE,]SETTING=VALUE`) as trace settings.

    Triton's rules: the mode before the first comma is `triton` (or `opentelemetry`, which
    Trident does not implement); without one the setting is global (`rate`, `count`, `level`,
    `mode`); `triton,file=` and `triton,log-frequency=` belong to the triton mode. Levels
    accumulate (`level=TIMESTAMPS` and `level=TENSORS` give both) and `level=OFF` turns tracing
    off whatever else is given. Unlike Triton, an unknown setting is an error, not ignored.
    """
    settings: dict[str, list[str]] = {}
    levels: list[str] = []
    disabled = False
    for argument in arguments:
        comma = argument.find(",")
        equals = argument.find("=", comma + 1)
        if comma == 0 or equals < 0:
            raise ValueError(
                f"--trace-config option format is '<trace mode>,<setting>=<value>' or "
                f"'<setting>=<value>'; got '{argument}'"
            )
        mode = argument[:comma].lower() if comma > 0 else ""
        setting = argument[comma + 1 : equals]
        value = argument[equals + 1 :]
        if not setting or not value:
            raise ValueError(f"--trace-config needs a setting and a value; got '{argument}'")
        if mode not in ("", "triton"):
            raise ValueError(
                f"--trace-config: trace mode '{mode}' is not supported (only 'triton')"
            )
        if mode == "" and setting == "mode":
            if value.lower() != "triton":
                raise ValueError(f"--trace-config: trace mode '{value}' is not supported")
        elif mode == "" and setting == "level":
            if value.lower() not in _LEVEL_WORDS:
                raise ValueError(f"--trace-config: invalid value for trace level: {value}")
            level = _LEVEL_WORDS[value.lower()]
            if level is None:
                disabled = True
            elif level not in levels:
                levels.append(level)
        elif mode == "" and setting in _GLOBAL_KEYS:
            settings[_GLOBAL_KEYS[setting]] = [_integer(setting, value, _GLOBAL_KEYS[setting])]
        elif mode == "triton" and setting in _TRITON_KEYS:
            key = _TRITON_KEYS[setting]
            settings[key] = [value if key == "trace_file" else _integer(setting, value, key)]
        else:
            where = "triton," if mode else ""
            raise ValueError(f"--trace-config: unknown setting '{where}{setting}'")
    if disabled or levels:
        settings["trace_level"] = ["OFF"] if disabled else levels
    return settings


def _integer(setting: str, value: str, key: str) -> str:
    low, high = _INTEGERS[key]
    if not _is_int(value) or not low <= int(value) <= high:
        raise ValueError(
            f"--trace-config: '{setting}' must be an integer from {low} to {high}; got '{value}'"
        )
    return str(int(value))
