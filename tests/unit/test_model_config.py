import json

import pytest

from trident.runtime.core import model_config
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

CONFIG = """
name: "m"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
version_policy { specific { versions: [ 1, 3 ] } }
dynamic_batching { max_queue_delay_microseconds: 100 preferred_batch_size: [ 4 ] }
"""


def test_parse_normalize_and_render_like_triton():
    config = model_config.parse_config_text(CONFIG)
    model_config.normalize(config, "m", "python")
    model_config.validate(config)
    rendered = model_config.message_to_dict(config)
    assert rendered["name"] == "m"
    assert rendered["backend"] == "python"
    assert rendered["platform"] == ""
    assert rendered["max_batch_size"] == 8
    # 64-bit integers render as JSON numbers, not protobuf's strings
    assert rendered["input"][0]["dims"] == [4]
    assert rendered["output"][0]["dims"] == [-1, 4]
    assert rendered["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert rendered["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    # defaults are printed, unset sub-messages are not
    assert rendered["input"][0]["optional"] is False
    assert "sequence_batching" not in rendered
    assert rendered["instance_group"] == [
        {
            "name": "m_0",
            "kind": "KIND_CPU",
            "count": 1,
            "gpus": [],
            "secondary_devices": [],
            "profile": [],
            "passive": False,
            "host_policy": "",
        }
    ]
    assert rendered["optimization"]["input_pinned_memory"] == {"enable": True}
    assert rendered["default_model_filename"] == "model.py"
    assert json.loads(model_config.config_to_json(config)) == rendered


def test_default_version_policy_is_latest_one():
    config = mc.ModelConfig()
    model_config.normalize(config, "x", "onnxruntime")
    assert config.version_policy.latest.num_versions == 1
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"


def test_parse_error_names_file_and_line():
    with pytest.raises(ModelLoadError, match=r"config.pbtxt: 2:17 .*integer"):
        model_config.parse_config_text('name: "m"\nmax_batch_size: "eight"\n')


def test_name_mismatch_is_rejected_with_a_fix():
    config = model_config.parse_config_text('name: "other"')
    with pytest.raises(ModelLoadError, match="make them match"):
        model_config.normalize(config, "m", "python")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('input [ { name: "A" dims: [ 1 ] } ]', "needs a 'data_type'"),
        ('input [ { name: "A" data_type: TYPE_FP32 dims: [ 0 ] } ]', "dimension 0"),
        (
            'input [ { name: "A" data_type: TYPE_FP32 dims: [1] }, '
            '{ name: "A" data_type: TYPE_FP32 dims: [1] } ]',
            "declared twice",
        ),
        (
            "max_batch_size: 4 dynamic_batching { preserve_ordering: true priority_levels: 2 }",
            "only one priority level",
        ),
    ],
)
def test_validation_errors(text, message):
    config = model_config.parse_config_text(text)
    model_config.normalize(config, "m", "python")
    with pytest.raises(ModelLoadError, match=message):
        model_config.validate(config)


def test_json_override_rejects_unknown_fields():
    with pytest.raises(ModelLoadError, match="invalid config override"):
        model_config.parse_config_json('{"name": "m", "no_such_field": 1}')
    parsed = model_config.parse_config_json('{"name": "m", "max_batch_size": 2}')
    assert parsed.max_batch_size == 2


def test_instance_groups_resolve_against_the_visible_gpus(monkeypatch):
    from trident.runtime.core import devices

    monkeypatch.setattr(devices, "gpu_ids", lambda: (0, 1))
    config = model_config.parse_config_text(
        "instance_group [ { kind: KIND_GPU count: 2 }, { kind: KIND_AUTO }, { kind: KIND_CPU } ]"
    )
    model_config.normalize(config, "m", "onnxruntime")
    groups = [(g.kind, list(g.gpus), g.count) for g in config.instance_group]
    assert groups == [
        (mc.ModelInstanceGroup.KIND_GPU, [0, 1], 2),
        (mc.ModelInstanceGroup.KIND_GPU, [0, 1], 1),
        (mc.ModelInstanceGroup.KIND_CPU, [], 1),
    ]
    bad = model_config.parse_config_text("instance_group [ { kind: KIND_GPU gpus: [ 3 ] } ]")
    with pytest.raises(ModelLoadError, match=r"lists GPU\(s\) \[3\]"):
        model_config.normalize(bad, "m", "onnxruntime")


def test_kind_gpu_without_a_gpu_is_a_clear_load_error(monkeypatch):
    from trident.runtime.core import devices

    monkeypatch.setattr(devices, "gpu_ids", lambda: ())
    auto = model_config.parse_config_text("instance_group [ { kind: KIND_AUTO } ]")
    model_config.normalize(auto, "m", "pytorch")
    assert auto.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    config = model_config.parse_config_text("instance_group [ { kind: KIND_GPU } ]")
    with pytest.raises(ModelLoadError, match="no CUDA GPU is visible"):
        model_config.normalize(config, "m", "python")
