"""Typed reads of the string-valued `parameters` maps in a model config.

config.pbtxt carries backend options as strings (`parameters { key: "k" value: { string_value:
"v" } }`, and `parameters { key: "k" value: "v" }` inside execution accelerators). These helpers
turn them into bools and ints with an error that names the key and the bad value.
"""

from __future__ import annotations

from collections.abc import Mapping

from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def model_parameters(config: mc.ModelConfig) -> dict[str, str]:
    """The config's `parameters` as a plain {key: string_value} dict."""
    return {key: value.string_value for key, value in config.parameters.items()}


def parse_bool(key: str, value: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ModelLoadError(f"parameter '{key}' must be true or false (or 1 / 0), not '{value}'")


def parse_int(key: str, value: str, minimum: int | None = None) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ModelLoadError(f"parameter '{key}' must be an integer, not '{value}'") from None
    if minimum is not None and number < minimum:
        raise ModelLoadError(f"parameter '{key}' must be >= {minimum}, not {number}")
    return number


def bool_parameter(params: Mapping[str, str], key: str, default: bool) -> bool:
    value = params.get(key)
    return default if value is None or not value.strip() else parse_bool(key, value)


def int_parameter(
    params: Mapping[str, str], key: str, default: int, minimum: int | None = None
) -> int:
    value = params.get(key)
    return default if value is None or not value.strip() else parse_int(key, value, minimum)
