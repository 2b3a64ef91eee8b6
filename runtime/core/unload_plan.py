"""Which models one unload request takes with it, decided on a snapshot of what is loaded.

`unload_dependents: true` follows Triton's rule: once a model is unloaded, each model it called
(an ensemble's steps) that was loaded only because an ensemble needed it, and that no model still
loaded calls, is unloaded too, and so on down nested ensembles. A model someone asked for (the
load API, `--load-model`, the repository at start) is never taken along. Trident also unloads the
loaded ensembles that call the unloaded model, since with a step gone they cannot serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadedNode:
    """One loaded model as the plan sees it."""

    #: The models it calls (an ensemble's steps); empty for other models.
    calls: frozenset[str]
    #: Loaded because someone asked for it, not only because an ensemble needed it.
    explicit: bool


def unload_plan(loaded: Mapping[str, LoadedNode], name: str, unload_dependents: bool) -> list[str]:
    """The models to unload, in order, `name` first (whether or not it is loaded)."""
    if not unload_dependents:
        return [name]
    remaining = dict(loaded)
    order = [name]
    removed = remaining.pop(name, None)
    pending = sorted(removed.calls) if removed is not None else []
    while pending:
        callee = pending.pop(0)
        node = remaining.get(callee)
        if node is None or node.explicit or any(callee in n.calls for n in remaining.values()):
            continue
        order.append(callee)
        del remaining[callee]
        pending.extend(sorted(node.calls))
    pending = [name]
    while pending:
        target = pending.pop()
        for caller in [c for c, node in remaining.items() if target in node.calls]:
            order.append(caller)
            del remaining[caller]
            pending.append(caller)
    return order
