"""Model states, control modes and close reasons are StrEnums: the same strings reach the wire
(the repository index over HTTP and gRPC, the statistics JSON, the CLI), and a bad control mode
is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trident.backends.registry import BackendRegistry
from trident.runtime.cli import build_parser, settings_from_args
from trident.runtime.core.model_manager import ModelManager
from trident.runtime.core.model_states import ControlMode, ModelState, RepositoryIndexEntry
from trident.runtime.core.repository import ModelRepository
from trident.runtime.core.scheduling.close_reason import CloseReason
from trident.runtime.core.scheduling.queue_policy import QueuePolicy, TimeoutAction
from trident.runtime.core.stats import ModelStats
from trident.runtime.frontends.grpc import render as grpc_render
from trident.runtime.frontends.http import codec as http_codec
from trident.runtime.frontends.http import render as http_render
from trident.runtime.protocol import model_config_pb2 as mc


def _entries() -> list[RepositoryIndexEntry]:
    return [
        RepositoryIndexEntry("a", "1", ModelState.READY),
        RepositoryIndexEntry("b", "2", ModelState.UNAVAILABLE, "unloaded"),
        RepositoryIndexEntry("c"),
    ]


def test_the_repository_index_carries_tritons_state_strings_over_http():
    body = json.loads(http_codec.dumps(http_render.repository_index(_entries())))
    assert [entry.get("state") for entry in body] == ["READY", "UNAVAILABLE", None]
    assert body[1]["reason"] == "unloaded"


def test_the_repository_index_carries_tritons_state_strings_over_grpc():
    message = grpc_render.repository_index(_entries())
    wire = type(message).FromString(message.SerializeToString())
    assert [model.state for model in wire.models] == ["READY", "UNAVAILABLE", ""]
    assert all(type(model.state) is str for model in wire.models)


def test_close_reasons_are_plain_strings_in_the_statistics_json():
    stats = ModelStats()
    stats.record_batch_closed(CloseReason.QUEUE_DELAY)
    stats.record_batch_closed(CloseReason.QUEUE_DELAY)
    text = json.dumps(dict(stats.batch_close_reasons))
    assert text == '{"queue_delay": 2}'
    assert stats.batch_close_reasons["queue_delay"] == 2


def test_a_queue_policy_reads_its_timeout_action_from_the_config():
    proto = mc.ModelQueuePolicy(timeout_action=mc.ModelQueuePolicy.DELAY)
    policy = QueuePolicy.from_proto(proto)
    assert policy.timeout_action is TimeoutAction.DELAY
    assert QueuePolicy.from_proto(mc.ModelQueuePolicy()).timeout_action is TimeoutAction.REJECT


@pytest.mark.parametrize("given", ["explicit", ControlMode.EXPLICIT])
def test_the_manager_takes_a_control_mode_as_a_string_or_a_member(given, tmp_path: Path):
    manager = ModelManager(ModelRepository([tmp_path]), BackendRegistry(), control_mode=given)
    assert manager.control_mode is ControlMode.EXPLICIT


def test_an_unknown_control_mode_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match=r"none, poll, explicit.*'sometimes'"):
        ModelManager(ModelRepository([tmp_path]), BackendRegistry(), control_mode="sometimes")


def test_the_cli_parses_the_control_mode_into_the_enum(capsys):
    parser = build_parser()
    settings = settings_from_args(parser.parse_args(["serve", "--model-control-mode", "poll"]))
    assert settings.model_control_mode is ControlMode.POLL
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--model-control-mode", "sometimes"])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
