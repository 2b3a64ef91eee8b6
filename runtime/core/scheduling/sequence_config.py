"""What a model's `sequence_batching { ... }` asks of the sequence batcher, read and checked once
at load time.

The checks follow Triton's (model_config_utils / sequence_batch_scheduler), with messages that say
what to change. Defaults follow Triton too: `max_sequence_idle_microseconds` 1 s, the `direct`
strategy when none is named, one sequence slot per batch entry (`max(1, max_batch_size)`), and
for `oldest` up to `max_candidate_sequences` sequences per instance, preferring full batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from trident.runtime.errors import ModelLoadError, TridentError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import (
    CONFIG_TYPE_TO_DATATYPE,
    DATATYPE_SIZE,
    DATATYPE_TO_NUMPY,
    deserialize_bytes_tensor,
    element_count,
)

#: Triton's SEQUENCE_IDLE_DEFAULT_MICROSECONDS.
DEFAULT_MAX_IDLE_US = 1_000_000
#: Folder under the model's folder that holds `initial_state { data_file }` files.
INITIAL_STATE_FOLDER = "initial_state"


class Strategy(StrEnum):
    """How the sequence batcher lays out a batch (the config's `direct` or `oldest`)."""

    DIRECT = "direct"
    OLDEST = "oldest"


class ControlKind(StrEnum):
    """What a control input tells the model (CONTROL_SEQUENCE_<kind> in the config)."""

    START = "START"
    END = "END"
    READY = "READY"
    CORRID = "CORRID"


_KIND_NAMES = {
    mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START: ControlKind.START,
    mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END: ControlKind.END,
    mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY: ControlKind.READY,
    mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID: ControlKind.CORRID,
}
#: Datatypes a CONTROL_SEQUENCE_CORRID tensor may have (Triton's list).
CORRID_DATATYPES = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """One control input the batcher adds to every request it runs."""

    #: The model input that carries the control.
    name: str
    kind: ControlKind
    #: v2 datatype of the tensor.
    datatype: str
    #: The values meaning false / true (None for CORRID, which carries the correlation ID).
    false_value: object = None
    true_value: object = None


@dataclass(frozen=True, slots=True)
class StateSpec:
    """One implicit state: fed to `input_name`, taken back from `output_name`."""

    input_name: str
    output_name: str
    datatype: str
    dims: tuple[int, ...]
    #: The state a sequence starts from, without the batch dimension.
    initial: np.ndarray


@dataclass(frozen=True, slots=True)
class SequenceSettings:
    """The sequence batcher's configuration, with Triton's defaults applied."""

    strategy: Strategy
    max_idle_ns: int
    #: Sequences one instance holds at once: batch slots (direct) or candidates (oldest).
    slots_per_instance: int
    #: The model's max_batch_size; 0 means the model does not batch.
    max_batch_size: int
    max_queue_delay_ns: int = 0
    #: direct: the share of slots that must be ready before a batch runs early.
    minimum_slot_utilization: float = 0.0
    #: oldest: batch sizes to run as soon as they can be formed.
    preferred_batch_sizes: tuple[int, ...] = ()
    controls: tuple[ControlSpec, ...] = ()
    states: tuple[StateSpec, ...] = ()

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def control(self, kind: ControlKind) -> ControlSpec | None:
        return next((c for c in self.controls if c.kind == kind), None)

    @classmethod
    def from_model_config(cls, config: mc.ModelConfig, model_dir: Path) -> SequenceSettings:
        """Read `config.sequence_batching`; raise ModelLoadError when it is not usable."""
        where = f"model '{config.name}'"
        batching = config.sequence_batching
        if batching.iterative_sequence:
            raise ModelLoadError(
                f"{where}: sequence_batching.iterative_sequence is not supported by Trident "
                "(it needs request rescheduling); remove it"
            )
        idle_us = batching.max_sequence_idle_microseconds or DEFAULT_MAX_IDLE_US
        max_batch_size = config.max_batch_size
        slots = max(1, max_batch_size)
        controls = _controls(batching, where)
        states = _states(batching, max_batch_size, model_dir, where)
        if batching.HasField("oldest"):
            oldest = batching.oldest
            if oldest.max_candidate_sequences < 0:
                raise ModelLoadError(
                    f"{where}: sequence_batching.oldest.max_candidate_sequences must be >= 0"
                )
            preferred = tuple(sorted(set(oldest.preferred_batch_size)))
            for size in preferred:
                if size < 1 or size > slots:
                    raise ModelLoadError(
                        f"{where}: sequence_batching.oldest.preferred_batch_size {size} must be "
                        f"between 1 and max_batch_size ({slots})"
                    )
            return cls(
                strategy=Strategy.OLDEST,
                max_idle_ns=idle_us * 1000,
                slots_per_instance=oldest.max_candidate_sequences or slots,
                max_batch_size=max_batch_size,
                max_queue_delay_ns=oldest.max_queue_delay_microseconds * 1000,
                preferred_batch_sizes=preferred or (slots,),
                controls=controls,
                states=states,
            )
        direct = batching.direct
        if not 0.0 <= direct.minimum_slot_utilization <= 1.0:
            raise ModelLoadError(
                f"{where}: sequence_batching.direct.minimum_slot_utilization must be between "
                f"0 and 1, got {direct.minimum_slot_utilization}"
            )
        return cls(
            strategy=Strategy.DIRECT,
            max_idle_ns=idle_us * 1000,
            slots_per_instance=slots,
            max_batch_size=max_batch_size,
            max_queue_delay_ns=direct.max_queue_delay_microseconds * 1000,
            minimum_slot_utilization=direct.minimum_slot_utilization,
            controls=controls,
            states=states,
        )


def _datatype(data_type: int) -> str:
    return CONFIG_TYPE_TO_DATATYPE.get(mc.DataType.Name(data_type), "")


def _controls(batching: mc.ModelSequenceBatching, where: str) -> tuple[ControlSpec, ...]:
    specs: list[ControlSpec] = []
    for control_input in batching.control_input:
        name = control_input.name
        if not name:
            raise ModelLoadError(f"{where}: every sequence_batching.control_input needs a 'name'")
        if len(control_input.control) != 1:
            raise ModelLoadError(
                f"{where}: sequence_batching control input '{name}' must have exactly one "
                f"'control', it has {len(control_input.control)}"
            )
        spec = _control(name, control_input.control[0], where)
        for other in specs:
            if other.kind == spec.kind:
                raise ModelLoadError(
                    f"{where}: sequence batching specifies multiple CONTROL_SEQUENCE_{spec.kind} "
                    f"tensors ('{other.name}' and '{name}')"
                )
            if other.name == name:
                raise ModelLoadError(
                    f"{where}: sequence_batching control input '{name}' is declared twice"
                )
        specs.append(spec)
    return tuple(specs)


def _control(name: str, control: mc.ModelSequenceBatching.Control, where: str) -> ControlSpec:
    kind = _KIND_NAMES[control.kind]
    pairs = [
        (values, datatype)
        for values, datatype in (
            (list(control.int32_false_true), "INT32"),
            (list(control.fp32_false_true), "FP32"),
            (list(control.bool_false_true), "BOOL"),
        )
        if values
    ]
    what = f"{where}: sequence_batching control input '{name}' (CONTROL_SEQUENCE_{kind})"
    if kind == ControlKind.CORRID:
        if pairs:
            raise ModelLoadError(
                f"{what} carries the correlation ID: give it a 'data_type' and no *_false_true"
            )
        datatype = _datatype(control.data_type)
        if datatype not in CORRID_DATATYPES:
            raise ModelLoadError(
                f"{what} needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or "
                f"TYPE_STRING, got {mc.DataType.Name(control.data_type)}"
            )
        return ControlSpec(name, kind, datatype)
    if control.data_type != mc.TYPE_INVALID:
        raise ModelLoadError(
            f"{what} takes its type from int32_false_true, fp32_false_true or bool_false_true; "
            "remove 'data_type'"
        )
    if len(pairs) != 1:
        raise ModelLoadError(
            f"{what} must set exactly one of int32_false_true, fp32_false_true or bool_false_true"
        )
    values, datatype = pairs[0]
    if len(values) != 2:
        raise ModelLoadError(
            f"{what}: the *_false_true list must hold two values, [false, true]; it has "
            f"{len(values)}"
        )
    dtype = DATATYPE_TO_NUMPY[datatype]
    return ControlSpec(name, kind, datatype, dtype.type(values[0]), dtype.type(values[1]))


def _states(
    batching: mc.ModelSequenceBatching, max_batch_size: int, model_dir: Path, where: str
) -> tuple[StateSpec, ...]:
    specs: list[StateSpec] = []
    for state in batching.state:
        if not state.input_name or not state.output_name:
            raise ModelLoadError(
                f"{where}: every sequence_batching.state needs 'input_name' and 'output_name'"
            )
        what = f"{where}: state '{state.input_name}'"
        datatype = _datatype(state.data_type)
        if not datatype:
            raise ModelLoadError(f"{what} needs a 'data_type' (e.g. TYPE_FP32)")
        if any(spec.input_name == state.input_name for spec in specs):
            raise ModelLoadError(
                f"{where}: State input name '{state.input_name}' specified more than once."
            )
        if any(spec.output_name == state.output_name for spec in specs):
            raise ModelLoadError(
                f"{where}: state output name '{state.output_name}' specified more than once"
            )
        dims = tuple(state.dims)
        if any(dim < -1 or dim == 0 for dim in dims):
            raise ModelLoadError(
                f"{what} has dims {list(dims)}; dims must be positive, or -1 for a variable size"
            )
        if len(state.initial_state) > 1:
            raise ModelLoadError(
                f"{where}: initial_state field for state input '{state.input_name}' must "
                f"contain exactly one or zero element. Found '{len(state.initial_state)}' "
                "elements."
            )
        if state.initial_state:
            initial = _initial_state(state, state.initial_state[0], datatype, model_dir, what)
        else:
            # Triton starts a sequence from uninitialized memory, with 1 for each variable
            # dimension; zeros are the deterministic version of that.
            initial = _zeros(datatype, tuple(1 if dim == -1 else dim for dim in dims))
        specs.append(StateSpec(state.input_name, state.output_name, datatype, dims, initial))
    return tuple(specs)


def _initial_state(
    state: mc.ModelSequenceBatching.State,
    initial: mc.ModelSequenceBatching.InitialState,
    datatype: str,
    model_dir: Path,
    what: str,
) -> np.ndarray:
    if initial.data_type != state.data_type:
        raise ModelLoadError(
            f"{what}: the data type used for 'initial_state' does not match the state data type"
        )
    if not initial.name:
        raise ModelLoadError(f"{what}: field 'name' must be set when using initial_state")
    dims = tuple(initial.dims)
    if len(dims) != len(state.dims):
        raise ModelLoadError(
            f"{what}: number of dimensions in 'initial_state' doesn't match the 'state' "
            f"dimensions ({len(dims)} != {len(state.dims)})"
        )
    for initial_dim, state_dim in zip(dims, state.dims):
        if initial_dim < 1:
            raise ModelLoadError(
                f"{what}: 'initial_state' dims {list(dims)} must all be positive (no variable "
                "dimensions)"
            )
        if state_dim != -1 and initial_dim != state_dim:
            raise ModelLoadError(
                f"{what}: 'initial_state' dim doesn't match the 'state' dims "
                f"({initial_dim} != {state_dim})"
            )
    which = initial.WhichOneof("state_data")
    if which == "zero_data":
        return _zeros(datatype, dims)
    if which != "data_file":
        raise ModelLoadError(f"{what}: initial_state needs zero_data: true or a data_file")
    path = model_dir / INITIAL_STATE_FOLDER / initial.data_file
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            f"{what}: cannot read initial_state data_file {path}: {exc.strerror}"
        ) from None
    count = element_count(dims)
    if datatype == "BYTES":
        try:
            return deserialize_bytes_tensor(content, count).reshape(dims)
        except TridentError as exc:
            raise ModelLoadError(
                f"{what}: initial_state data_file {path} is not {count} length-prefixed "
                f"strings: {exc}"
            ) from None
    size = count * DATATYPE_SIZE[datatype]
    if len(content) < size:
        raise ModelLoadError(
            f"{what}: initial_state expects {size} bytes, but the data provided from {path} "
            f"only has {len(content)} bytes"
        )
    return np.frombuffer(content[:size], dtype=DATATYPE_TO_NUMPY[datatype]).reshape(dims).copy()


def _zeros(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    if datatype == "BYTES":
        return np.full(shape, b"", dtype=np.object_)
    return np.zeros(shape, dtype=DATATYPE_TO_NUMPY[datatype])
