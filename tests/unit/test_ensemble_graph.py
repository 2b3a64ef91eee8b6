"""EnsembleGraph: reading `ensemble_scheduling`, checking the data flow and the composing models'
configs, and pruning steps for the outputs a request names. No server, no event loop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from trident.runtime.core.model_config import parse_config_text
from trident.runtime.core.scheduling.ensemble import EnsembleGraph
from trident.runtime.errors import ModelLoadError, NotFoundError

# IN -> a -> A_OUT -> b -> B_OUT --+
#            A_OUT -> c -> C_OUT --+-> d -> OUT
DIAMOND = """
name: "ens"
platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [
  { model_name: "a" model_version: -1 input_map { key: "X" value: "IN" }
    output_map { key: "Y" value: "A_OUT" } },
  { model_name: "b" model_version: -1 input_map { key: "X" value: "A_OUT" }
    output_map { key: "Y" value: "B_OUT" } },
  { model_name: "c" model_version: 2 input_map { key: "X" value: "A_OUT" }
    output_map { key: "Y" value: "C_OUT" } },
  { model_name: "d" model_version: -1
    input_map [ { key: "L" value: "B_OUT" }, { key: "R" value: "C_OUT" } ]
    output_map { key: "Y" value: "OUT" } }
] }
"""


def _graph(text: str) -> EnsembleGraph:
    return EnsembleGraph.from_config(parse_config_text(text))


def _broken(text: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_a_diamond_graph_reads_its_steps():
    graph = _graph(DIAMOND)
    assert [s.model_name for s in graph.steps] == ["a", "b", "c", "d"]
    assert graph.steps[2].model_version == 2
    assert graph.steps[0].model_version == 0  # -1: the latest version
    assert graph.steps[3].consumes == {"B_OUT", "C_OUT"}
    assert graph.producer == {"A_OUT": 0, "B_OUT": 1, "C_OUT": 2, "OUT": 3}
    assert graph.composing_models() == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("replacements", "message"),
    [
        (
            [('model_name: "b" ', 'model_name: "" ')],
            "must specify 'model_name' in step 1 of ensemble 'ens'",
        ),
        (
            [('output_map { key: "Y" value: "C_OUT" }', 'output_map { key: "Y" value: "B_OUT" }')],
            "ensemble tensor 'B_OUT' is written by both step 1 (model 'b') and step 2",
        ),
        (
            [('input_map { key: "X" value: "A_OUT" }', 'input_map { key: "X" value: "NOPE" }')],
            "reads ensemble tensor 'NOPE', which is neither an ensemble input nor written",
        ),
        (
            [('output [ { name: "OUT"', 'output [ { name: "OTHER"')],
            "output 'OTHER' of ensemble 'ens' is not written by any step",
        ),
        (
            [
                (
                    'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]',
                    'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] },'
                    ' { name: "SPARE" data_type: TYPE_FP32 dims: [ 1 ] } ]',
                )
            ],
            "ensemble input 'SPARE' of ensemble 'ens' is not used by any step",
        ),
        (
            [
                (
                    'output_map { key: "Y" value: "OUT" }',
                    'output_map [ { key: "Y" value: "OUT" }, { key: "Z" value: "LOST" } ]',
                )
            ],
            "ensemble tensor 'LOST' (written by step 3 (model 'd')) is unused",
        ),
        (
            [
                (
                    "ensemble_scheduling {",
                    "model_warmup [ { name: 'w' batch_size: 1 } ]\nensemble_scheduling {",
                )
            ],
            "model_warmup can not be specified for ensemble 'ens'",
        ),
    ],
)
def test_bad_graphs_are_rejected_with_what_to_fix(replacements, message):
    with pytest.raises(ModelLoadError) as info:
        _graph(_broken(DIAMOND, *replacements))
    assert message in str(info.value)


def test_an_ensemble_without_steps_is_rejected():
    with pytest.raises(ModelLoadError, match="must specify 'step' for ensemble 'e'"):
        _graph('name: "e" platform: "ensemble"')


def test_a_cycle_is_rejected():
    # b reads C_OUT, which c makes from B_OUT: neither can ever start.
    text = _broken(
        DIAMOND,
        (
            '{ model_name: "b" model_version: -1 input_map { key: "X" value: "A_OUT" }',
            '{ model_name: "b" model_version: -1 input_map [ { key: "X" value: "A_OUT" },'
            ' { key: "W" value: "C_OUT" } ]',
        ),
        (
            '{ model_name: "c" model_version: 2 input_map { key: "X" value: "A_OUT" }',
            '{ model_name: "c" model_version: 2 input_map { key: "X" value: "B_OUT" }',
        ),
    )
    with pytest.raises(ModelLoadError) as info:
        _graph(text)
    assert "a cycle in the ensemble graph" in str(info.value)
    assert "step 1 (model 'b')" in str(info.value)
    assert "step 2 (model 'c')" in str(info.value)


def test_steps_needed_prunes_what_the_requested_outputs_do_not_use():
    text = _broken(
        DIAMOND,
        (
            'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]',
            'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] },'
            ' { name: "C_OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]',
        ),
    )
    graph = _graph(text)
    assert graph.steps_needed(frozenset({"C_OUT"})) == {0, 2}
    assert graph.steps_needed(frozenset({"OUT"})) == {0, 1, 2, 3}
    assert graph.steps_needed(frozenset({"OUT", "C_OUT"})) == {0, 1, 2, 3}


def _model(text: str) -> SimpleNamespace:
    return SimpleNamespace(config=parse_config_text(text))


def _io_model(name: str, inputs: str, outputs: str, mbs: int = 0, extra: str = "") -> str:
    return (
        f'name: "{name}" backend: "python" max_batch_size: {mbs}\n'
        f"input [ {inputs} ]\noutput [ {outputs} ]\n{extra}"
    )


FP32_X = '{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }'
FP32_Y = '{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }'
DECOUPLED = "model_transaction_policy { decoupled: true }"


def _models(**overrides: str) -> dict[str, SimpleNamespace]:
    models = {
        "a": _io_model("a", FP32_X, FP32_Y),
        "b": _io_model("b", FP32_X, FP32_Y),
        "c": _io_model("c", FP32_X, FP32_Y),
        "d": _io_model(
            "d",
            '{ name: "L" data_type: TYPE_FP32 dims: [ 4 ] },'
            ' { name: "R" data_type: TYPE_FP32 dims: [ 4 ] }',
            FP32_Y,
        ),
    }
    models.update(overrides)
    return {name: _model(text) for name, text in models.items()}


def _lookup(models: dict[str, SimpleNamespace]):
    def lookup(name: str, version: int) -> SimpleNamespace:
        if name not in models:
            raise NotFoundError(f"Request for unknown model: '{name}' is not found")
        return models[name]

    return lookup


def test_composing_models_that_fit_pass():
    config = parse_config_text(DIAMOND)
    EnsembleGraph.from_config(config).check_composing_models(config, _lookup(_models()))


def test_batching_and_non_batching_models_may_share_a_tensor_when_full_shapes_agree():
    # a batches [4] (full shape [-1,4]); b does not batch and takes [-1,4]: Triton accepts it.
    models = _models(
        a=_io_model("a", FP32_X, FP32_Y, mbs=8),
        b=_io_model("b", '{ name: "X" data_type: TYPE_FP32 dims: [ -1, 4 ] }', FP32_Y),
    )
    config = parse_config_text(DIAMOND)
    EnsembleGraph.from_config(config).check_composing_models(config, _lookup(models))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"c": None}, "step 2 (model 'c'): composing model is not available"),
        (
            {"b": _io_model("b", '{ name: "Q" data_type: TYPE_FP32 dims: [ 4 ] }', FP32_Y)},
            "input_map maps ensemble tensor 'A_OUT' to input 'X', which the model does not have",
        ),
        (
            {"b": _io_model("b", FP32_X, '{ name: "Z" data_type: TYPE_FP32 dims: [ 4 ] }')},
            "output_map maps output 'Y' to ensemble tensor 'B_OUT', but the model has no such",
        ),
        (
            {
                "d": _io_model(
                    "d",
                    '{ name: "L" data_type: TYPE_FP32 dims: [ 4 ] },'
                    ' { name: "R" data_type: TYPE_FP32 dims: [ 4 ] },'
                    ' { name: "EXTRA" data_type: TYPE_FP32 dims: [ 4 ] }',
                    FP32_Y,
                )
            },
            "the model's input 'EXTRA' is not mapped to any ensemble tensor",
        ),
        (
            {"b": _io_model("b", '{ name: "X" data_type: TYPE_INT32 dims: [ 4 ] }', FP32_Y)},
            "ensemble tensor 'A_OUT': inconsistent data type: TYPE_FP32 is inferred from model "
            "'a' while TYPE_INT32 is inferred from model 'b'",
        ),
        (
            {"b": _io_model("b", '{ name: "X" data_type: TYPE_FP32 dims: [ 5 ] }', FP32_Y)},
            "ensemble tensor 'A_OUT': inconsistent shape: [4] is inferred from model 'a' while "
            "[5] is inferred from model 'b'",
        ),
        (
            {"a": _io_model("a", FP32_X, FP32_Y, extra=DECOUPLED)},
            "the model is decoupled",
        ),
    ],
)
def test_composing_models_that_do_not_fit_are_named(overrides, message):
    models = _models(**{k: v for k, v in overrides.items() if v is not None})
    for name, value in overrides.items():
        if value is None:
            del models[name]
    config = parse_config_text(DIAMOND)
    with pytest.raises(ModelLoadError) as info:
        EnsembleGraph.from_config(config).check_composing_models(config, _lookup(models))
    assert message in str(info.value)


def test_an_ensemble_may_not_batch_more_than_a_composing_model():
    config = parse_config_text(DIAMOND.replace("max_batch_size: 0", "max_batch_size: 8"))
    models = _models(a=_io_model("a", FP32_X, FP32_Y, mbs=4))
    with pytest.raises(ModelLoadError, match="only allows maximum batch size to be 4"):
        EnsembleGraph.from_config(config).check_composing_models(config, _lookup(models))
