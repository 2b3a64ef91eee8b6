"""The core runs an InFlightRequest and leaves the frontend's InferenceRequest as it was decoded:
routing (version, validation, reshape), the dynamic batcher's ordered delivery and a decoupled
model's responses all go through the in-flight object."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.test_python_backend_support import write_model
from trident.backends.registry import BackendRegistry
from trident.runtime.core.cuda_shared_memory import CudaSharedMemoryRegistry
from trident.runtime.core.in_flight import InFlightRequest, validated
from trident.runtime.core.inference import InferenceService
from trident.runtime.core.model_manager import ModelManager
from trident.runtime.core.repository import ModelRepository
from trident.runtime.core.shared_memory import SharedMemoryRegistry
from trident.runtime.types import InferenceRequest, RequestedOutput, Tensor

DOUBLE = """
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2)]))
            return responses
"""

# Batched, with a reshape (the client sends [4], the model sees [2, 2]) and a queue delay long
# enough that the three requests below run as one batch.
DOUBLE_CONFIG = """
    backend: "python"
    max_batch_size: 8
    input [{ name: "X" data_type: TYPE_FP32 dims: [4] reshape: { shape: [2, 2] } }]
    output [{ name: "Y" data_type: TYPE_FP32 dims: [2, 2] }]
    dynamic_batching { max_queue_delay_microseconds: 200000 preferred_batch_size: [3] }
"""

COUNT = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
                for i in range(n):
                    out = pb_utils.Tensor("I", np.array([i], np.int32))
                    sender.send(pb_utils.InferenceResponse([out]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
"""

COUNT_CONFIG = """
    backend: "python"
    input [{ name: "N" data_type: TYPE_INT32 dims: [1] }]
    output [{ name: "I" data_type: TYPE_INT32 dims: [1] }]
    model_transaction_policy { decoupled: true }
"""


def _snapshot(request: InferenceRequest) -> dict[str, Any]:
    """Every field of the request, tensors by value (and the input list by identity)."""
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(request):
        value = getattr(request, field.name)
        if field.name == "inputs":
            fields["inputs list"] = id(value)
            value = [
                (id(t), t.name, t.datatype, t.shape, t.data.tobytes(), t.data.shape) for t in value
            ]
        elif field.name == "outputs":
            value = [dataclasses.astuple(output) for output in value]
        elif field.name == "cancellation":
            value = (id(value), value.cancelled)
        elif field.name == "parameters":
            value = dict(value)
        fields[field.name] = value
    return fields


@pytest.fixture
def service(tmp_path: Path):
    write_model(tmp_path, "double", DOUBLE, DOUBLE_CONFIG)
    write_model(tmp_path, "count", COUNT, COUNT_CONFIG)

    async def start() -> tuple[InferenceService, ModelManager]:
        manager = ModelManager(ModelRepository([tmp_path]), BackendRegistry())
        inference = InferenceService(manager, SharedMemoryRegistry(), CudaSharedMemoryRegistry())
        loop = asyncio.get_running_loop()
        manager.bind(loop, inference.infer, inference.infer_stream)
        inference.bind_loop(loop)
        assert await manager.start([]) == {}
        return inference, manager

    return start


def test_routing_and_batching_leave_the_frontends_request_as_decoded(service) -> None:
    async def scenario() -> None:
        inference, manager = await service()
        try:
            requests = [
                InferenceRequest(
                    "double",
                    id=str(i),
                    inputs=[Tensor("X", "FP32", (1, 4), np.full((1, 4), i, np.float32))],
                    outputs=[RequestedOutput("Y")],
                    parameters={"k": i},
                )
                for i in range(3)
            ]
            before = [_snapshot(request) for request in requests]
            responses = await asyncio.gather(*(inference.infer(r) for r in requests))
            for i, response in enumerate(responses):
                assert response.id == str(i) and response.model_version == "1"
                np.testing.assert_array_equal(response.outputs[0].data, np.full((1, 2, 2), 2 * i))
            stats = manager.get("double", 0).stats
            assert stats.execution_count == 1  # one batch: the dynamic batcher's ordered slots
            assert [_snapshot(request) for request in requests] == before
        finally:
            await manager.stop()

    asyncio.run(scenario())


def test_a_decoupled_models_responses_leave_the_frontends_request_as_decoded(service) -> None:
    async def scenario() -> None:
        inference, manager = await service()
        try:
            request = InferenceRequest(
                "count", id="c", inputs=[Tensor("N", "INT32", (1,), np.array([3], np.int32))]
            )
            before = _snapshot(request)
            got = [
                int(response.outputs[0].data[0])
                async for response in inference.infer_stream(request)
                if response.outputs
            ]
            assert got == [0, 1, 2]
            assert _snapshot(request) == before
        finally:
            await manager.stop()

    asyncio.run(scenario())


def test_the_in_flight_object_forwards_the_wire_fields_read_only() -> None:
    tensor = Tensor("X", "FP32", (1,), np.zeros(1, np.float32))
    request = InferenceRequest("m", 2, id="r", inputs=[tensor], sequence_id=7, priority=1)
    flight = validated(request, 3)
    assert (flight.model_name, flight.model_version, flight.version) == ("m", 2, 3)
    assert (flight.id, flight.sequence_id, flight.priority) == ("r", 7, 1)
    assert flight.inputs is request.inputs and flight.input("X") is tensor
    assert flight.input("nope") is None
    with pytest.raises(AttributeError):
        flight.id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        flight.extra = 1  # type: ignore[attr-defined]
    assert isinstance(InFlightRequest(request, 1).inputs_by_name, dict)
