"""The sequence batcher: config, control tensors, the planner with a fake clock, and the
scheduler driving fake instances on a real event loop (no sockets)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from trident.backends.base import ModelInstance
from trident.runtime.core.in_flight import InFlightRequest, validated
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.model_config import parse_config_text
from trident.runtime.core.scheduling.base import SingleResponder
from trident.runtime.core.scheduling.sequence_batcher import SequenceBatcher, StateKeeper
from trident.runtime.core.scheduling.sequence_config import SequenceSettings
from trident.runtime.core.scheduling.sequence_planner import SequencePlanner
from trident.runtime.core.stats import ModelStats
from trident.runtime.errors import InvalidArgumentError, ModelExecutionError, ModelLoadError
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

MS = 1_000_000  # ns

CONTROLS = """
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
"""


def settings_for(batching: str, max_batch_size: int = 0, model_dir: Path = Path(".")):
    config = parse_config_text(
        f'name: "m" max_batch_size: {max_batch_size} sequence_batching {{ {batching} }}'
    )
    return SequenceSettings.from_model_config(config, model_dir)


def request(
    correlation_id, value=0.0, start=False, end=False, batched=False, timeout_us=0
) -> InFlightRequest:
    shape = (1, 1) if batched else (1,)
    tensor = Tensor("INPUT", "FP32", shape, np.full(shape, value, np.float32))
    req = InferenceRequest(
        model_name="m",
        inputs=[tensor],
        sequence_id=correlation_id,
        sequence_start=start,
        sequence_end=end,
        timeout_us=timeout_us,
    )
    return validated(req, 1)


def control(req: InFlightRequest, name: str):
    tensor = req.input(name)
    assert tensor is not None, f"{name} not added"
    return tensor


# ---------------------------------------------------------------------------------- config


def test_defaults_follow_triton():
    settings = settings_for(CONTROLS, max_batch_size=4)
    assert settings.strategy == "direct"
    assert settings.max_idle_ns == 1_000_000 * 1000
    assert settings.slots_per_instance == 4
    oldest = settings_for("oldest { }", max_batch_size=8)
    assert oldest.strategy == "oldest"
    assert oldest.slots_per_instance == 8
    assert oldest.preferred_batch_sizes == (8,)
    assert settings_for("oldest { max_candidate_sequences: 3 }").slots_per_instance == 3
    assert settings_for("max_sequence_idle_microseconds: 5000").max_idle_ns == 5_000_000


@pytest.mark.parametrize(
    "batching, message",
    [
        (
            'control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_START '
            'int32_false_true: [0, 1] } ] }, { name: "B" control [ { kind: '
            "CONTROL_SEQUENCE_START int32_false_true: [0, 1] } ] } ]",
            "multiple CONTROL_SEQUENCE_START",
        ),
        (
            'control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_READY } ] } ]',
            "exactly one of int32_false_true",
        ),
        (
            'control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_END '
            "int32_false_true: [1] } ] } ]",
            "two values",
        ),
        (
            'control_input [ { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID '
            "data_type: TYPE_FP32 } ] } ]",
            "TYPE_UINT64",
        ),
        (
            'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ -1 ] '
            'initial_state: { data_type: TYPE_INT32 dims: [ 1, 2 ] zero_data: true name: "s" '
            "} } ]",
            "number of dimensions",
        ),
        (
            'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ 2 ] '
            'initial_state: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true name: "s" } } ]',
            "does not match the state data type",
        ),
        (
            'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ 2 ] '
            'initial_state: { data_type: TYPE_INT32 dims: [ 2 ] data_file: "nope" name: "s" } '
            "} ]",
            "cannot read initial_state data_file",
        ),
        ("iterative_sequence: true", "iterative_sequence is not supported"),
    ],
)
def test_bad_sequence_configs_fail_the_load_with_a_reason(batching, message, tmp_path):
    with pytest.raises(ModelLoadError, match=message):
        settings_for(batching, model_dir=tmp_path)


def test_initial_state_from_a_data_file(tmp_path):
    (tmp_path / "initial_state").mkdir()
    np.array([7, 8], np.int32).tofile(tmp_path / "initial_state" / "init.bin")
    settings = settings_for(
        'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ -1 ] '
        'initial_state: { data_type: TYPE_INT32 dims: [ 2 ] data_file: "init.bin" name: "s" } '
        "} ]",
        model_dir=tmp_path,
    )
    assert settings.states[0].initial.tolist() == [7, 8]


# ---------------------------------------------------------------------------- control tensors


@pytest.mark.parametrize("max_batch_size, shape", [(0, (1,)), (4, (1, 1))])
def test_control_tensors_have_the_configured_types_values_and_shape(max_batch_size, shape):
    planner = SequencePlanner("m", settings_for(CONTROLS, max_batch_size), 1)
    batched = max_batch_size > 0
    planner.enqueue(request(42, start=True, batched=batched), 0)
    first = planner.next_batch(0, 0).entries[0].request
    assert control(first, "START").datatype == "INT32"
    assert control(first, "START").data.dtype == np.int32
    assert control(first, "END").datatype == "FP32"
    assert control(first, "READY").datatype == "BOOL"
    assert control(first, "CORRID").datatype == "UINT64"
    for name in ("START", "END", "READY", "CORRID"):
        assert control(first, name).shape == shape
        assert control(first, name).data.shape == shape
    assert control(first, "START").data.reshape(-1).tolist() == [1]
    assert control(first, "END").data.reshape(-1).tolist() == [0.0]
    assert control(first, "READY").data.reshape(-1).tolist() == [True]
    assert control(first, "CORRID").data.reshape(-1).tolist() == [42]
    # The client's own input is still there, and the lookup table knows every input.
    assert set(first.inputs_by_name) == {"INPUT", "START", "END", "READY", "CORRID"}


def test_end_request_gets_end_true_and_start_false():
    planner = SequencePlanner("m", settings_for(CONTROLS), 1)
    planner.enqueue(request(5, start=True), 0)
    planner.enqueue(request(5, end=True), 1)
    planner.complete(planner.next_batch(0, 2), 3)
    last = planner.next_batch(0, 4).entries[0].request
    assert control(last, "START").data.tolist() == [0]
    assert control(last, "END").data.tolist() == [1.0]


def test_string_correlation_ids_reach_a_string_corrid_control():
    settings = settings_for(
        'control_input [ { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID '
        "data_type: TYPE_STRING } ] } ]"
    )
    planner = SequencePlanner("m", settings, 1)
    planner.enqueue(request("session-a", start=True), 0)
    tensor = control(planner.next_batch(0, 0).entries[0].request, "CORRID")
    assert tensor.datatype == "BYTES"
    assert tensor.data.tolist() == [b"session-a"]


def test_int64_corrid_control():
    settings = settings_for(
        'control_input [ { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID '
        "data_type: TYPE_INT64 } ] } ]"
    )
    planner = SequencePlanner("m", settings, 1)
    planner.enqueue(request(77, start=True), 0)
    tensor = control(planner.next_batch(0, 0).entries[0].request, "CORRID")
    assert tensor.data.dtype == np.int64
    assert tensor.data.tolist() == [77]


# ---------------------------------------------------------------------------- request checks


def test_requests_without_correlation_id_or_start_are_rejected():
    planner = SequencePlanner("m", settings_for(CONTROLS), 1)
    for missing in (0, ""):
        with pytest.raises(InvalidArgumentError, match="must specify a non-zero or non-empty"):
            planner.enqueue(request(missing, start=True), 0)
    with pytest.raises(InvalidArgumentError, match="must specify the START flag on the first"):
        planner.enqueue(request(9), 0)
    with pytest.raises(InvalidArgumentError, match="string correlation ID 'abc'"):
        planner.enqueue(request("abc", start=True), 0)
    assert planner.pending_count() == 0


def test_batched_model_takes_batch_size_one_only():
    planner = SequencePlanner("m", settings_for("", max_batch_size=4), 1)
    big = request(1, start=True, batched=True)
    big.inputs[0] = Tensor("INPUT", "FP32", (2, 1), np.zeros((2, 1), np.float32))
    with pytest.raises(InvalidArgumentError, match="must specify batch-size 1"):
        planner.enqueue(big, 0)


# --------------------------------------------------------------------- ordering and slots


def test_requests_of_a_sequence_run_one_at_a_time_in_order():
    planner = SequencePlanner("m", settings_for(CONTROLS), 1)
    for value, flags in ((1.0, {"start": True}), (2.0, {}), (3.0, {"end": True})):
        planner.enqueue(request(7, value, **flags), 0)
    seen = []
    for step in range(3):
        batch = planner.next_batch(0, step)
        assert len(batch.entries) == 1
        assert planner.next_batch(0, step) is None  # the instance is busy
        seen.append(float(batch.entries[0].request.input("INPUT").data[0]))
        planner.complete(batch, step)
    assert seen == [1.0, 2.0, 3.0]
    assert planner.next_batch(0, 9) is None
    assert planner.sequence_of(7) is None  # ended


def test_sequences_spread_over_instances_and_interleave():
    planner = SequencePlanner("m", settings_for(CONTROLS), 2)
    planner.enqueue(request(1, start=True), 0)
    planner.enqueue(request(2, start=True), 0)
    first, second = planner.next_batch(0, 0), planner.next_batch(1, 0)
    assert first.entries[0].request.sequence_id == 1
    assert second.entries[0].request.sequence_id == 2  # both run at once
    planner.enqueue(request(2, end=True), 1)
    planner.enqueue(request(1, end=True), 1)
    planner.complete(second, 2)
    # Sequence 2 continues on its own instance even though sequence 1 is still running.
    assert planner.next_batch(1, 2).entries[0].request.sequence_id == 2
    assert planner.next_batch(0, 2) is None


def test_direct_keeps_slots_in_place_with_null_requests():
    planner = SequencePlanner("m", settings_for(CONTROLS, max_batch_size=4), 1)
    for correlation_id in (10, 11, 12):
        planner.enqueue(request(correlation_id, correlation_id, start=True, batched=True), 0)
    planner.complete(planner.next_batch(0, 0), 1)  # all three started
    planner.enqueue(request(10, 1.0, batched=True), 2)
    planner.enqueue(request(12, 3.0, batched=True), 2)
    batch = planner.next_batch(0, 3)
    assert [entry.slot for entry in batch.entries] == [0, 1, 2]
    assert [e.sequence.correlation_id if e.sequence else None for e in batch.entries] == [
        10,
        None,
        12,
    ]
    ready = [bool(e.request.input("READY").data.reshape(-1)[0]) for e in batch.entries]
    assert ready == [True, False, True]
    null = batch.entries[1].request
    assert null.input("INPUT").data.tolist() == [[0.0]]
    assert control(null, "CORRID").data.reshape(-1).tolist() == [0]
    assert len(batch.real) == 2


def test_backlog_waits_for_a_free_slot():
    planner = SequencePlanner("m", settings_for(CONTROLS), 1)  # one slot in all
    planner.enqueue(request(1, start=True), 0)
    planner.enqueue(request(2, start=True), 0)
    planner.enqueue(request(2, end=True), 0)
    batch = planner.next_batch(0, 0)
    assert batch.entries[0].request.sequence_id == 1
    planner.complete(batch, 1)
    assert planner.next_batch(0, 1) is None  # sequence 2 is in the backlog
    assert planner.pending_count() == 2
    planner.enqueue(request(1, end=True), 2)
    planner.complete(planner.next_batch(0, 2), 3)
    assert planner.next_batch(0, 3).entries[0].request.sequence_id == 2


# ------------------------------------------------------------------------------ idle release


def test_idle_sequences_are_released_and_late_requests_get_a_clear_error():
    settings = settings_for(CONTROLS + " max_sequence_idle_microseconds: 1000")
    planner = SequencePlanner("m", settings, 1)
    planner.enqueue(request(3, start=True), 0)
    planner.complete(planner.next_batch(0, 0), 5 * MS)
    assert planner.next_wakeup() == 5 * MS + 1 * MS
    assert planner.reap_idle(5 * MS + MS - 1) == []
    reaped = planner.reap_idle(6 * MS)
    assert [s.correlation_id for s in reaped] == [3]
    with pytest.raises(InvalidArgumentError) as caught:
        planner.enqueue(request(3), 7 * MS)
    assert "must specify the START flag" in caught.value.message
    assert "idle for more than 1000 us" in caught.value.message
    # Its slot is free for a new sequence, and the same ID may start again.
    planner.enqueue(request(3, start=True), 8 * MS)
    assert planner.next_batch(0, 8 * MS).entries[0].request.sequence_id == 3


def test_a_queued_or_running_sequence_is_not_idle():
    settings = settings_for("max_sequence_idle_microseconds: 1000")
    planner = SequencePlanner("m", settings, 1)
    planner.enqueue(request(3, start=True), 0)
    batch = planner.next_batch(0, 0)
    assert planner.reap_idle(50 * MS) == []  # running
    planner.complete(batch, 50 * MS)
    assert planner.reap_idle(50 * MS + MS - 1) == []


# ------------------------------------------------------------------------------ implicit state

STATE = """
  state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 1 ]
            initial_state: { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" } } ]
"""


class Collect:
    def __init__(self) -> None:
        self.sent: list[InferenceResponse] = []

    def send(self, response):
        self.sent.append(response)

    def fail(self, error):
        self.sent.append(InferenceResponse(error=error))


def test_state_is_fed_kept_and_hidden_from_the_client():
    settings = settings_for(STATE + CONTROLS)
    planner = SequencePlanner("m", settings, 1)
    collected = Collect()
    values = []
    for step, flags in enumerate(({"start": True}, {}, {"end": True})):
        req = request(8, float(step + 1), **flags)
        sequence = planner.enqueue(req, step)
        keeper = StateKeeper(collected, sequence, settings.states, frozenset({"OUT"}))
        batch = planner.next_batch(0, step)
        fed = batch.entries[0].request.input("STATE_IN")
        assert fed.datatype == "INT32" and fed.shape == (1,)
        values.append(int(fed.data[0]))
        new_state = fed.data + int(req.input("INPUT").data[0])
        keeper.send(
            InferenceResponse(
                outputs=[
                    Tensor("OUT", "INT32", (1,), new_state),
                    Tensor("STATE_OUT", "INT32", (1,), new_state),
                ]
            )
        )
        planner.complete(batch, step)
    assert values == [0, 1, 3]  # zeros at START, then the running sum
    assert [[t.name for t in r.outputs] for r in collected.sent] == [["OUT"]] * 3


def test_state_output_reaches_the_client_when_the_config_lists_it():
    settings = settings_for(STATE)
    planner = SequencePlanner("m", settings, 1)
    collected = Collect()
    sequence = planner.enqueue(request(8, start=True), 0)
    keeper = StateKeeper(collected, sequence, settings.states, frozenset({"STATE_OUT"}))
    planner.next_batch(0, 0)
    keeper.send(InferenceResponse(outputs=[Tensor("STATE_OUT", "INT32", (1,), np.ones(1))]))
    assert [t.name for t in collected.sent[0].outputs] == ["STATE_OUT"]


def test_start_resets_the_state_and_batched_models_get_a_batch_dim():
    settings = settings_for(STATE, max_batch_size=2)
    planner = SequencePlanner("m", settings, 1)
    sequence = planner.enqueue(request(8, start=True, batched=True), 0)
    batch = planner.next_batch(0, 0)
    assert batch.entries[0].request.input("STATE_IN").shape == (1, 1)
    sequence.states["STATE_IN"] = Tensor("STATE_IN", "INT32", (1, 1), np.array([[5]], np.int32))
    planner.complete(batch, 1)
    planner.enqueue(request(8, batched=True), 2)
    batch = planner.next_batch(0, 2)
    assert batch.entries[0].request.input("STATE_IN").data.tolist() == [[5]]
    planner.complete(batch, 3)
    planner.enqueue(request(8, start=True, batched=True), 4)  # restart in place
    assert planner.next_batch(0, 4).entries[0].request.input("STATE_IN").data.tolist() == [[0]]


# ------------------------------------------------------------------------------ oldest strategy


def test_oldest_batches_the_oldest_ready_sequences():
    settings = settings_for(
        "oldest { max_candidate_sequences: 4 max_queue_delay_microseconds: 1000 }" + CONTROLS,
        max_batch_size=2,
    )
    planner = SequencePlanner("m", settings, 1)
    for at, correlation_id in enumerate((21, 22, 23)):
        planner.enqueue(request(correlation_id, start=True, batched=True), at)
    batch = planner.next_batch(0, 3)
    assert batch.reason == "max_batch_size"
    assert [e.request.sequence_id for e in batch.entries] == [21, 22]
    assert [e.request.input("CORRID").data.reshape(-1)[0] for e in batch.entries] == [21, 22]
    planner.complete(batch, 4)
    # One request ready: it waits for max_queue_delay_microseconds for a partner.
    assert planner.next_batch(0, 4) is None
    assert planner.next_wakeup() == 2 + 1 * MS
    late = planner.next_batch(0, 2 + 1 * MS)
    assert late.reason == "queue_delay"
    assert [e.request.sequence_id for e in late.entries] == [23]


def test_oldest_never_batches_two_requests_of_one_sequence():
    settings = settings_for("oldest { }", max_batch_size=4)
    planner = SequencePlanner("m", settings, 1)
    planner.enqueue(request(1, start=True, batched=True), 0)
    planner.enqueue(request(1, batched=True), 0)
    planner.enqueue(request(2, start=True, batched=True), 1)
    batch = planner.next_batch(0, 2)
    assert batch.reason == "no_more_requests"
    assert [e.request.sequence_id for e in batch.entries] == [1, 2]


def test_oldest_runs_a_preferred_size_at_once():
    settings = settings_for(
        "oldest { preferred_batch_size: [ 2 ] max_queue_delay_microseconds: 100000 }",
        max_batch_size=4,
    )
    planner = SequencePlanner("m", settings, 1)
    for correlation_id in (1, 2, 3):
        planner.enqueue(request(correlation_id, start=True, batched=True), correlation_id)
    batch = planner.next_batch(0, 4)
    assert batch.reason == "preferred_size"
    assert [e.request.sequence_id for e in batch.entries] == [1, 2]


def test_direct_waits_for_minimum_slot_utilization():
    settings = settings_for(
        "direct { max_queue_delay_microseconds: 1000 minimum_slot_utilization: 0.5 }",
        max_batch_size=4,
    )
    planner = SequencePlanner("m", settings, 1)
    planner.enqueue(request(1, start=True, batched=True), 0)
    assert planner.next_batch(0, 10) is None
    planner.enqueue(request(2, start=True, batched=True), 20)
    batch = planner.next_batch(0, 30)
    assert batch.reason == "slot_utilization"
    assert len(batch.entries) == 2


# ------------------------------------------------------------------------------ cancellation


def test_a_cancelled_request_ends_its_sequence():
    planner = SequencePlanner("m", settings_for(CONTROLS), 1)
    planner.enqueue(request(4, start=True), 0)
    running = planner.next_batch(0, 0)
    second, third = request(4), request(4, end=True)
    planner.enqueue(second, 1)
    planner.enqueue(third, 1)
    second.cancellation.cancel()
    planner.complete(running, 2)
    assert planner.next_batch(0, 3) is None
    failures = planner.take_failures()
    assert [(r is second, e.grpc_code) for r, e in failures] == [
        (True, "CANCELLED"),
        (False, "CANCELLED"),
    ]
    assert planner.pending_count() == 0
    with pytest.raises(InvalidArgumentError, match="one of its requests was cancelled"):
        planner.enqueue(request(4), 4)


def test_cancelling_behind_a_running_request_frees_the_slot_after_it():
    planner = SequencePlanner("m", settings_for(CONTROLS), 1)  # one slot in all
    planner.enqueue(request(4, start=True), 0)
    running = planner.next_batch(0, 0)
    behind = request(4)
    planner.enqueue(behind, 1)
    planner.enqueue(request(5, start=True), 1)  # backlogged behind sequence 4
    planner.cancel(planner.sequence_of(4), behind, 2)
    assert [(r is behind, e.grpc_code) for r, e in planner.take_failures()] == [(True, "CANCELLED")]
    assert planner.sequence_of(4) is None  # later requests of 4 need a new START
    planner.complete(running, 3)
    assert planner.next_batch(0, 3).entries[0].request.sequence_id == 5


# ------------------------------------------------------------------------------ resizing


def test_added_instances_take_the_backlog_and_retired_ones_finish_their_sequences():
    planner = SequencePlanner("m", settings_for(CONTROLS), 1)
    planner.enqueue(request(1, start=True), 0)
    planner.enqueue(request(2, start=True), 0)  # backlogged: one slot in all
    assert planner.add_instance() == 1
    assert planner.next_batch(1, 1).entries[0].request.sequence_id == 2
    planner.retire(0)
    assert not planner.is_retired_and_idle(0)  # sequence 1 still lives there
    batch = planner.next_batch(0, 1)
    planner.complete(batch, 2)
    planner.enqueue(request(3, start=True), 3)  # never goes to the retired instance
    assert planner.next_batch(0, 3) is None
    planner.enqueue(request(1, end=True), 4)
    planner.complete(planner.next_batch(0, 4), 5)
    assert planner.is_retired_and_idle(0)
    assert planner.next_batch(0, 6) is None  # sequence 3 waits for instance 1


# ------------------------------------------------------------------------- the scheduler, live


class Accumulator(ModelInstance):
    """Keeps a running sum per correlation ID, resetting on the START control."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sums: dict[int, float] = {}
        self.delay = delay
        self.batches: list[list[int]] = []

    def execute(self, requests, timing):
        time.sleep(self.delay)
        self.batches.append([r.sequence_id for r in requests])
        responses = []
        for r in requests:
            corrid = int(r.input("CORRID").data[0])
            if r.input("START").data[0]:
                self.sums[corrid] = 0.0
            self.sums[corrid] += float(r.input("INPUT").data[0])
            out = np.array([self.sums[corrid]], np.float32)
            responses.append(InferenceResponse(outputs=[Tensor("OUT", "FP32", (1,), out)]))
        return responses


def _live(batcher_config: str, instance: ModelInstance, count: int = 1):
    loop = asyncio.get_running_loop()
    workers = [InstanceWorker(f"w{i}", instance, loop) for i in range(count)]
    stats = ModelStats()
    scheduler = SequenceBatcher("m", workers, stats, settings_for(batcher_config))
    return scheduler, workers, stats


def _submit(scheduler, req):
    req.responder = SingleResponder(asyncio.get_running_loop(), threading.get_ident())
    scheduler.submit(req)
    return req.responder


def test_interleaved_sequences_keep_independent_sums():
    async def scenario():
        instance = Accumulator(delay=0.01)
        scheduler, workers, stats = _live(CONTROLS, instance)
        plan = [(1, 1.0, True, False), (2, 10.0, True, False), (1, 2.0, False, False)]
        plan += [(2, 20.0, False, True), (1, 3.0, False, True)]
        waits = [_submit(scheduler, request(c, v, start=s, end=e)) for c, v, s, e in plan]
        results = [await w.result() for w in waits]
        await scheduler.stop()
        workers[0].close()
        return results, stats

    results, stats = asyncio.run(scenario())
    assert [float(r.outputs[0].data[0]) for r in results] == [1.0, 10.0, 3.0, 30.0, 6.0]
    assert stats.success.count == 5
    assert stats.inference_count == 5
    assert stats.pending == 0
    assert stats.batch_close_reasons == {"no_more_requests": 5}


def test_live_rejections_raise_and_are_counted():
    async def scenario():
        scheduler, workers, stats = _live(CONTROLS, Accumulator())
        with pytest.raises(InvalidArgumentError, match="START flag"):
            _submit(scheduler, request(99, 1.0))
        await scheduler.stop()
        workers[0].close()
        return stats

    stats = asyncio.run(scenario())
    assert stats.failures_by_reason["OTHER"] == 1


def test_live_idle_release_by_timer():
    async def scenario():
        scheduler, workers, _ = _live(
            CONTROLS + " max_sequence_idle_microseconds: 20000", Accumulator()
        )
        await _submit(scheduler, request(5, 1.0, start=True)).result()
        assert scheduler.planner.sequence_of(5) is not None
        await asyncio.sleep(0.1)  # no request: the timer releases the sequence
        released = scheduler.planner.sequence_of(5) is None
        with pytest.raises(InvalidArgumentError, match="idle for more than 20000 us"):
            _submit(scheduler, request(5, 1.0))
        await scheduler.stop()
        workers[0].close()
        return released

    assert asyncio.run(scenario())


def test_live_cancel_of_a_queued_request_answers_cancelled():
    async def scenario():
        scheduler, workers, stats = _live(CONTROLS, Accumulator(delay=0.5))
        first = _submit(scheduler, request(6, 1.0, start=True))
        queued = request(6, 2.0)
        waiting = _submit(scheduler, queued)
        queued.cancellation.cancel()
        cancelled = await asyncio.wait_for(waiting.result(), 0.4)  # before the first ends
        await first.result()
        await scheduler.stop()
        workers[0].close()
        return cancelled, stats

    cancelled, stats = asyncio.run(scenario())
    assert cancelled.error.grpc_code == "CANCELLED"
    assert stats.failures_by_reason["CANCELED"] == 1


def test_stop_fails_what_is_queued():
    async def scenario():
        scheduler, workers, _ = _live(CONTROLS, Accumulator(delay=0.05))
        first = _submit(scheduler, request(6, 1.0, start=True))
        queued = _submit(scheduler, request(6, 2.0))
        await scheduler.stop()
        results = await first.result(), await queued.result()
        workers[0].close()
        return results

    first, queued = asyncio.run(scenario())
    assert first.error is None
    assert queued.error.grpc_code == "UNAVAILABLE"


def test_live_resize_waits_for_the_sequences_of_a_removed_instance():
    async def scenario():
        scheduler, workers, _ = _live(CONTROLS, Accumulator())
        await _submit(scheduler, request(1, 1.0, start=True)).result()
        backlogged = _submit(scheduler, request(2, 5.0, start=True))
        extra = InstanceWorker("extra", Accumulator(), asyncio.get_running_loop())
        assert await scheduler.resize([workers[0], extra]) == []
        second = (await asyncio.wait_for(backlogged.result(), 5)).outputs[0].data[0]
        shrinking = asyncio.ensure_future(scheduler.resize([extra]))
        await asyncio.sleep(0.05)
        waited = not shrinking.done()  # sequence 1 still runs on the first instance
        last = await _submit(scheduler, request(1, 2.0, end=True)).result()
        removed = await asyncio.wait_for(shrinking, 5)
        await scheduler.stop()
        for worker in (*workers, extra):
            worker.close()
        return second, waited, float(last.outputs[0].data[0]), removed == workers

    second, waited, last, removed_first = asyncio.run(scenario())
    assert second == 5.0
    assert waited
    assert last == 3.0  # sequence 1 kept its sum on its own instance
    assert removed_first


class Raising(ModelInstance):
    def execute(self, requests, timing):
        raise RuntimeError("broken model")


def test_an_execution_that_raises_is_still_counted():
    async def scenario():
        scheduler, workers, stats = _live(CONTROLS, Raising())
        response = await _submit(scheduler, request(7, 1.0, start=True)).result()
        assert isinstance(response.error, ModelExecutionError)
        assert "broken model" in str(response.error)
        await scheduler.stop()
        workers[0].close()
        return stats

    stats = asyncio.run(scenario())
    # As in Triton: an execution of one inference, and a failed request (never a success).
    assert (stats.execution_count, stats.inference_count) == (1, 1)
    assert stats.fail.count == 1 and stats.success.count == 0
    assert stats.failures_by_reason["BACKEND"] == 1
