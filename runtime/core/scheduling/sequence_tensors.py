"""The tensors the sequence batcher adds to a request before it runs: control inputs (START, END,
READY, CORRID) and implicit-state inputs; and the "null" requests that keep direct-strategy batch
slots in place.

Shapes follow Triton: a control tensor is `[1]` per request, `[1, 1]` when the model batches (so a
batch of N requests sees `[N, 1]`); a state input is the state's dims, with the batch dimension
in front when the model batches.
"""

from __future__ import annotations

import numpy as np

from trident.runtime.core.in_flight import InFlightRequest, validated
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import DATATYPE_TO_NUMPY, InferenceRequest, RequestedOutput, Tensor

from .sequence_config import ControlKind, ControlSpec, SequenceSettings, StateSpec

CorrelationId = int | str


def check_correlation_id(
    settings: SequenceSettings, model_name: str, correlation_id: CorrelationId
) -> None:
    """Raise InvalidArgumentError when the model's CORRID control cannot carry this ID."""
    control = settings.control(ControlKind.CORRID)
    if control is None or control.datatype == "BYTES":
        return
    if not isinstance(correlation_id, str):
        _corrid_array(control, correlation_id)  # raises when it does not fit the datatype
        return
    # Triton would pass an unset tensor here; say what to send instead.
    raise InvalidArgumentError(
        f"inference request to model '{model_name}' has the string correlation ID "
        f"'{correlation_id}', but the model's control input '{control.name}' "
        f"(CONTROL_SEQUENCE_CORRID) is {control.datatype}: send an integer sequence_id"
    )


def control_tensors(
    settings: SequenceSettings,
    *,
    start: bool,
    end: bool,
    ready: bool,
    correlation_id: CorrelationId,
) -> list[Tensor]:
    """The control inputs for one request, in config order."""
    shape = (1, 1) if settings.batched else (1,)
    flags = {ControlKind.START: start, ControlKind.END: end, ControlKind.READY: ready}
    tensors = []
    for control in settings.controls:
        if control.kind == ControlKind.CORRID:
            data = _corrid_array(control, correlation_id)
        else:
            value = control.true_value if flags[control.kind] else control.false_value
            data = np.array([value], dtype=DATATYPE_TO_NUMPY[control.datatype])
        tensors.append(Tensor(control.name, control.datatype, shape, data.reshape(shape)))
    return tensors


def _corrid_array(control: ControlSpec, correlation_id: CorrelationId) -> np.ndarray:
    if control.datatype == "BYTES":
        text = correlation_id if isinstance(correlation_id, str) else str(correlation_id)
        data = np.empty(1, dtype=np.object_)
        data[0] = text.encode("utf-8")
        return data
    dtype = DATATYPE_TO_NUMPY[control.datatype]
    info = np.iinfo(dtype)
    value = int(correlation_id) if not isinstance(correlation_id, str) else 0
    if not info.min <= value <= info.max:
        raise InvalidArgumentError(
            f"correlation ID {value} does not fit the {control.datatype} control input "
            f"'{control.name}' (CONTROL_SEQUENCE_CORRID)"
        )
    return np.array([value], dtype=dtype)


def initial_state_tensors(settings: SequenceSettings) -> dict[str, Tensor]:
    """Each state input's starting value, keyed by input name."""
    # A copy each time: a model may write into its inputs.
    return {
        spec.input_name: _state_tensor(settings, spec, spec.initial.copy())
        for spec in settings.states
    }


def _state_tensor(settings: SequenceSettings, spec: StateSpec, value: np.ndarray) -> Tensor:
    data = value[np.newaxis, ...] if settings.batched else value
    return Tensor(spec.input_name, spec.datatype, tuple(data.shape), data)


def state_from_output(spec: StateSpec, output: Tensor) -> Tensor:
    """The next input state, from the state output a model produced."""
    return Tensor(spec.input_name, output.datatype, output.shape, output.data)


def add_inputs(request: InFlightRequest, tensors: list[Tensor]) -> None:
    """Give the request these inputs, replacing same-named ones (Triton's override inputs)."""
    if not tensors:
        return
    names = {tensor.name for tensor in tensors}
    # A new list: the in-flight request starts with the frontend's own list, left as it was.
    request.inputs = [tensor for tensor in request.inputs if tensor.name not in names] + tensors
    by_name = request.inputs_by_name
    # Validation fills inputs_by_name; a request that skipped it gets it filled here.
    source = tensors if by_name else request.inputs
    by_name.update((tensor.name, tensor) for tensor in source)


def null_request(template: InFlightRequest, settings: SequenceSettings) -> InFlightRequest:
    """A request that only holds a batch slot: the template's inputs as zeros, READY false and
    a zero correlation ID (the model must not trust any input of a not-ready slot)."""
    added = {control.name for control in settings.controls}
    added.update(spec.input_name for spec in settings.states)
    inputs = [
        Tensor(tensor.name, tensor.datatype, tensor.shape, _zeros_like(tensor))
        for tensor in template.inputs
        if tensor.name not in added
    ]
    request = InferenceRequest(
        model_name=template.model_name,
        model_version=template.model_version,
        inputs=inputs,
        outputs=[RequestedOutput(output.name) for output in template.outputs],
    )
    return validated(request, template.version, DISCARD)


def _zeros_like(tensor: Tensor) -> np.ndarray:
    if tensor.datatype == "BYTES":
        return np.full(tensor.shape, b"", dtype=np.object_)
    return np.zeros(tensor.shape, dtype=DATATYPE_TO_NUMPY[tensor.datatype])


class _Discard:
    """Responder of a null request: its responses go nowhere."""

    def send(self, response: object) -> None:
        pass

    def fail(self, error: object) -> None:
        pass


DISCARD = _Discard()
