"""Stateful models through the real server with tritonclient: sequence IDs and flags over gRPC
and HTTP, control tensors, implicit state, string correlation IDs, idle release, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import RunningServer, model_source, running_server, write_model

#: tests/models/accumulate: sums its inputs per sequence and echoes the flags and CORRID it saw.
ACCUMULATOR_PY = model_source("accumulate")


def accumulator_config(
    name: str, max_batch_size: int = 0, extra: str = "", instances: int = 1
) -> str:
    return f"""
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [
  {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "FLAGS" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "CORRID_OUT" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "BATCH" data_type: TYPE_INT32 dims: [ 1 ] }}
]
sequence_batching {{
  {extra}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING }} ] }}
  ]
}}
"""


#: tests/models/stateful: keeps nothing itself, the server keeps its state (implicit state).
STATEFUL_PY = model_source("stateful")

STATEFUL_CONFIG = """
name: "NAME"
backend: "python"
max_batch_size: 0
instance_group [ { count: 2 kind: KIND_CPU } ]
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching {
  IDLE
  state [
    {
      input_name: "STATE_IN"
      output_name: "STATE_OUT"
      data_type: TYPE_INT32
      dims: [ 1 ]
      initial_state: { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" }
    }
  ]
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository: Path = tmp_path_factory.mktemp("sequence_models")
    # Without batching an instance holds one sequence at a time: two instances, two sequences.
    write_model(
        repository, "accumulate", ACCUMULATOR_PY, accumulator_config("accumulate", instances=2)
    )
    write_model(
        repository,
        "accumulate_batched",
        ACCUMULATOR_PY,
        accumulator_config("accumulate_batched", max_batch_size=4),
    )
    write_model(
        repository,
        "accumulate_delayed",
        ACCUMULATOR_PY,
        accumulator_config(
            "accumulate_delayed",
            max_batch_size=4,
            extra="direct { max_queue_delay_microseconds: 3000 minimum_slot_utilization: 1.0 }",
        ),
    )
    write_model(
        repository,
        "accumulate_oldest",
        ACCUMULATOR_PY,
        accumulator_config(
            "accumulate_oldest",
            max_batch_size=4,
            extra="oldest { max_candidate_sequences: 4 max_queue_delay_microseconds: 2000 }",
        ),
    )
    stateful = STATEFUL_CONFIG.replace("NAME", "stateful").replace("IDLE", "")
    write_model(repository, "stateful", STATEFUL_PY, stateful)
    short_idle = STATEFUL_CONFIG.replace("NAME", "short_idle")
    short_idle = short_idle.replace("IDLE", "max_sequence_idle_microseconds: 200000")
    write_model(repository, "short_idle", STATEFUL_PY, short_idle)
    with running_server(repository) as running:
        yield running


def _grpc_step(client, model, sequence_id, value, start=False, end=False, batched=False):
    shape = [1, 1] if batched else [1]
    tensor = grpcclient.InferInput("INPUT", shape, "INT32")
    tensor.set_data_from_numpy(np.full(shape, value, np.int32))
    return client.infer(
        model, [tensor], sequence_id=sequence_id, sequence_start=start, sequence_end=end
    )


def _http_step(client, model, sequence_id, value, start=False, end=False):
    tensor = httpclient.InferInput("INPUT", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], np.int32))
    return client.infer(
        model, [tensor], sequence_id=sequence_id, sequence_start=start, sequence_end=end
    )


def test_grpc_interleaved_sequences_with_control_inputs(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    steps = [
        (1001, 1, True, False),
        (1002, 100, True, False),
        (1001, 2, False, False),
        (1002, 200, False, False),
        (1001, 3, False, True),
        (1002, 300, False, True),
    ]
    seen = []
    for sequence_id, value, start, end in steps:
        result = _grpc_step(client, "accumulate", sequence_id, value, start, end)
        seen.append(
            (
                int(result.as_numpy("OUTPUT")[0]),
                int(result.as_numpy("FLAGS")[0]),
                result.as_numpy("CORRID_OUT")[0],
            )
        )
    assert seen == [
        (1, 1, b"1001"),  # flags(): TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
        (100, 1, b"1002"),
        (3, 0, b"1001"),
        (300, 0, b"1002"),
        (6, 2, b"1001"),  # TRITONSERVER_REQUEST_FLAG_SEQUENCE_END
        (600, 2, b"1002"),
    ]
    statistics = client.get_inference_statistics("accumulate", as_json=True)
    model_stats = statistics["model_stats"][0]
    assert int(model_stats["inference_count"]) == 6


def test_http_string_correlation_ids(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    first = _http_step(client, "accumulate", "session-a", 5, start=True)
    other = _http_step(client, "accumulate", "session-b", 7, start=True)
    second = _http_step(client, "accumulate", "session-a", 6, end=True)
    last = _http_step(client, "accumulate", "session-b", 1, end=True)
    assert int(first.as_numpy("OUTPUT")[0]) == 5
    assert int(second.as_numpy("OUTPUT")[0]) == 11
    assert int(other.as_numpy("OUTPUT")[0]) == 7
    assert int(last.as_numpy("OUTPUT")[0]) == 8
    assert second.as_numpy("CORRID_OUT")[0] == b"session-a"


@pytest.mark.parametrize("model", ["accumulate_batched", "accumulate_delayed", "accumulate_oldest"])
def test_concurrent_sequences_batch_on_one_instance(server: RunningServer, model: str) -> None:
    """Four sequences at once on one batching instance (direct, direct with a queue delay,
    oldest): slots, null requests and batching must leave every sequence's sum intact."""

    def run(sequence_id: int) -> list[int]:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        values = []
        for step in range(6):
            result = _grpc_step(client, model, sequence_id, sequence_id, step == 0, step == 5, True)
            values.append(int(result.as_numpy("OUTPUT")[0][0]))
        return values

    sequence_ids = [11, 12, 13, 14]
    with ThreadPoolExecutor(len(sequence_ids)) as pool:
        totals = dict(zip(sequence_ids, pool.map(run, sequence_ids)))
    assert totals == {sid: [sid * n for n in range(1, 7)] for sid in sequence_ids}


def test_direct_slots_stay_in_place_with_not_ready_requests(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for sequence_id in (21, 22, 23):  # slots 0, 1 and 2 of the one instance
        _grpc_step(client, "accumulate_batched", sequence_id, 1, start=True, batched=True)
    result = _grpc_step(client, "accumulate_batched", 23, 5, batched=True)
    # Sequence 23 runs in its own slot (batch position 2), behind two not-READY requests.
    assert int(result.as_numpy("BATCH")[0][0]) == 3
    assert int(result.as_numpy("OUTPUT")[0][0]) == 6
    for sequence_id, expected in ((21, 2), (22, 2), (23, 7)):
        result = _grpc_step(client, "accumulate_batched", sequence_id, 1, end=True, batched=True)
        assert int(result.as_numpy("OUTPUT")[0][0]) == expected


def test_implicit_state_is_kept_by_the_server_and_not_returned(server: RunningServer) -> None:
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    http_client = httpclient.InferenceServerClient(server.http_url)
    a1 = _grpc_step(grpc_client, "stateful", 7, 10, start=True)
    b1 = _http_step(http_client, "stateful", "b", 1, start=True)
    a2 = _grpc_step(grpc_client, "stateful", 7, 5)
    b2 = _http_step(http_client, "stateful", "b", 2, end=True)
    a3 = _grpc_step(grpc_client, "stateful", 7, 1, end=True)
    assert [int(r.as_numpy("OUTPUT")[0]) for r in (a1, a2, a3)] == [10, 15, 16]
    assert [int(r.as_numpy("OUTPUT")[0]) for r in (b1, b2)] == [1, 3]
    assert [o.name for o in a2.get_response().outputs] == ["OUTPUT"]
    assert [o["name"] for o in b2.get_response()["outputs"]] == ["OUTPUT"]
    # A new sequence with a used ID starts again from the initial state.
    again = _grpc_step(grpc_client, "stateful", 7, 4, start=True, end=True)
    assert int(again.as_numpy("OUTPUT")[0]) == 4


def test_idle_sequence_is_released(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    _grpc_step(client, "short_idle", 55, 1, start=True)
    time.sleep(0.6)  # max_sequence_idle_microseconds is 0.2 s
    with pytest.raises(InferenceServerException) as caught:
        _grpc_step(client, "short_idle", 55, 1)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "must specify the START flag" in caught.value.message()
    assert "idle for more than 200000 us" in caught.value.message()
    # The same ID starts afresh, from the initial state.
    again = _grpc_step(client, "short_idle", 55, 3, start=True, end=True)
    assert int(again.as_numpy("OUTPUT")[0]) == 3


def test_requests_without_id_or_start_are_rejected(server: RunningServer) -> None:
    http_client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(InferenceServerException) as caught:
        _http_step(http_client, "accumulate", 0, 1)
    assert caught.value.status() == "400"
    assert (
        "inference request to model 'accumulate' must specify a non-zero or non-empty "
        "correlation ID" in caught.value.message()
    )
    with pytest.raises(InferenceServerException) as caught:
        _http_step(http_client, "accumulate", 31337, 1)
    assert caught.value.status() == "400"
    assert "must specify the START flag on the first request of the sequence" in (
        caught.value.message()
    )
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as caught:
        _grpc_step(grpc_client, "stateful", 0, 1)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    # Control inputs are the server's to send, not the client's.
    start = grpcclient.InferInput("START", [1], "INT32")
    start.set_data_from_numpy(np.array([1], np.int32))
    value = grpcclient.InferInput("INPUT", [1], "INT32")
    value.set_data_from_numpy(np.array([1], np.int32))
    with pytest.raises(InferenceServerException, match="unexpected inference input 'START'"):
        grpc_client.infer("accumulate", [value, start], sequence_id=5, sequence_start=True)
