"""What one unload takes with it: Triton's unload_dependents rule on a snapshot of loaded models."""

from __future__ import annotations

from trident.runtime.core.unload_plan import LoadedNode, unload_plan


def _node(*calls: str, explicit: bool = False) -> LoadedNode:
    return LoadedNode(frozenset(calls), explicit)


def test_without_unload_dependents_only_the_model_goes() -> None:
    loaded = {"ens": _node("a", "b", explicit=True), "a": _node(), "b": _node()}
    assert unload_plan(loaded, "ens", False) == ["ens"]
    assert unload_plan({}, "unknown", True) == ["unknown"]


def test_composing_models_loaded_for_the_ensemble_go_with_it() -> None:
    loaded = {"ens": _node("a", "b", explicit=True), "a": _node(), "b": _node()}
    assert unload_plan(loaded, "ens", True) == ["ens", "a", "b"]


def test_models_loaded_on_purpose_or_still_called_stay() -> None:
    loaded = {
        "ens": _node("a", "b", "c", explicit=True),
        "other": _node("b", explicit=True),
        "a": _node(explicit=True),
        "b": _node(),
        "c": _node(),
    }
    assert unload_plan(loaded, "ens", True) == ["ens", "c"]


def test_nested_ensembles_cascade_down() -> None:
    loaded = {
        "outer": _node("inner", "x", explicit=True),
        "inner": _node("y", "z"),
        "x": _node(),
        "y": _node(),
        "z": _node("deep"),
        "deep": _node(),
    }
    assert unload_plan(loaded, "outer", True) == ["outer", "inner", "x", "y", "z", "deep"]


def test_ensembles_calling_the_unloaded_model_go_as_well() -> None:
    loaded = {
        "top": _node("mid", explicit=True),
        "mid": _node("leaf", explicit=True),
        "leaf": _node(explicit=True),
        "unrelated": _node(explicit=True),
    }
    assert unload_plan(loaded, "leaf", True) == ["leaf", "mid", "top"]
