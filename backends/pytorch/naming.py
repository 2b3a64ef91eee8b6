"""How config tensor names map to a PyTorch model's arguments and results (Triton's conventions).

Inputs, in the order Triton tries them:
1. FORWARD_ARGUMENT: every config input is named after an argument of `forward()`;
2. NAMED_INDEX: every name ends in `__<index>` (`INPUT__0`, `INPUT__1`): the positional index;
3. CONFIG_ORDER: otherwise the config's order is the argument order.
Outputs: by key when the model returns a dict with those keys, else NAMED_INDEX (`OUTPUT__0`),
else CONFIG_ORDER into the returned tuple.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from trident.runtime.errors import ModelLoadError

FORWARD_ARGUMENT = "FORWARD_ARGUMENT"
NAMED_INDEX = "NAMED_INDEX"
CONFIG_ORDER = "CONFIG_ORDER"
DICT_KEY = "DICT_KEY"

_INDEXED = re.compile(r"^.+__(\d+)$")


@dataclass(frozen=True, slots=True)
class Binding:
    """Config name -> argument position (or dict key, for DICT_KEY outputs)."""

    convention: str
    positions: dict[str, int]
    keys: dict[str, str]

    def position(self, name: str) -> int:
        return self.positions[name]


def bind_inputs(config_names: Sequence[str], forward_args: Sequence[str] | None) -> Binding:
    if forward_args is not None and all(name in forward_args for name in config_names):
        return Binding(
            FORWARD_ARGUMENT, {name: list(forward_args).index(name) for name in config_names}, {}
        )
    indexed = _indexed(config_names, "input")
    if indexed is not None:
        return Binding(NAMED_INDEX, indexed, {})
    return Binding(CONFIG_ORDER, {name: i for i, name in enumerate(config_names)}, {})


def bind_outputs(config_names: Sequence[str], dict_keys: Sequence[str] | None) -> Binding:
    if dict_keys is not None and all(name in dict_keys for name in config_names):
        return Binding(DICT_KEY, {}, {name: name for name in config_names})
    indexed = _indexed(config_names, "output")
    if indexed is not None:
        return Binding(NAMED_INDEX, indexed, {})
    return Binding(CONFIG_ORDER, {name: i for i, name in enumerate(config_names)}, {})


def _indexed(names: Sequence[str], kind: str) -> dict[str, int] | None:
    positions: dict[str, int] = {}
    for name in names:
        match = _INDEXED.match(name)
        if match is None:
            return None
        positions[name] = int(match.group(1))
    seen: dict[int, str] = {}
    for name, index in positions.items():
        if index in seen:
            raise ModelLoadError(
                f"{kind}s '{seen[index]}' and '{name}' both map to position {index} (the "
                "number after '__' is the argument position)"
            )
        seen[index] = name
    return positions if names else None
