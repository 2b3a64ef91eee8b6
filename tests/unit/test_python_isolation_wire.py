"""The isolation channel's pieces without processes: rings, the codec, frames, settings."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest
from google.protobuf import text_format

from trident.backends.python.isolation import shm, wire
from trident.backends.python.isolation.process import describe_exit
from trident.backends.python.isolation.settings import IsolationSettings
from trident.runtime.errors import ModelLoadError, NotFoundError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor


@pytest.fixture
def ring():
    """A writer and a reader sharing one anonymous mapping (overflow files get a test prefix)."""
    memory = mmap.mmap(-1, shm.HEADER_BYTES + 4096)
    prefix = f"{shm.FILE_PREFIX}{os.getpid()}-unittest-{os.urandom(3).hex()}-x"
    yield shm.RingWriter(memory, prefix), shm.RingReader(memory, prefix)
    shm.remove_files(prefix)


def test_ring_blocks_wrap_around_once_the_reader_released_them(ring) -> None:
    writer, reader = ring
    first, _ = writer.reserve(3000)
    assert first.segment == 0 and first.offset == shm.HEADER_BYTES
    reader.open(first)
    second, memory = writer.reserve(3000)  # no room left in the ring: an overflow segment
    assert second.segment == 1 and memory is not writer.memory
    memory.close()
    reader.release(first)
    third, _ = writer.reserve(3000)  # wraps to the start again
    assert third.segment == 0 and third.offset == shm.HEADER_BYTES


def test_blocks_released_out_of_order_free_the_ring_in_order(ring) -> None:
    writer, reader = ring
    blocks = [writer.reserve(1000)[0] for _ in range(3)]
    for block in blocks:
        reader.open(block)
    reader.release(blocks[1])
    assert writer.reserve(1000)[0].segment == 0  # the 4th fits in what is left
    assert writer.reserve(1000)[0].segment > 0  # nothing released at the front yet
    reader.release(blocks[0])  # frees blocks 0 and 1 together
    assert writer.reserve(1500)[0].segment == 0


def test_requests_round_trip_with_views_of_shared_memory(ring) -> None:
    writer, reader = ring
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    words = np.array([b"a", b"bc", b""], dtype=np.object_)
    request = InferenceRequest(
        "m",
        id="r1",
        inputs=[Tensor("X", "FP32", (3, 4), data), Tensor("S", "BYTES", (3,), words)],
        outputs=[RequestedOutput("Y")],
        parameters={"k": 1},
        sequence_id="seq",
        sequence_start=True,
        timeout_us=5,
    )
    payload, block = wire.encode_requests([(7, request)], writer, 2)
    assert len(payload) < 400  # metadata only: the bytes are in the ring
    (decoded,), got_block = wire.decode_requests(payload, reader, copy=False)
    assert decoded.tag == 7 and got_block == block
    got = decoded.request
    assert (got.id, got.sequence_id, got.sequence_start, got.timeout_us) == ("r1", "seq", True, 5)
    assert got.parameters == {"k": 1} and [o.name for o in got.outputs] == ["Y"]
    by_name = {tensor.name: tensor for tensor in got.inputs}
    np.testing.assert_array_equal(by_name["X"].data, data)
    assert np.shares_memory(got.inputs[0].data, np.frombuffer(writer.memory, np.uint8))
    assert list(by_name["S"].data) == [b"a", b"bc", b""]


def test_responses_and_errors_round_trip_as_copies(ring) -> None:
    writer, reader = ring
    big = np.random.default_rng(1).standard_normal(2000).astype(np.float64)  # > the ring
    responses = [
        InferenceResponse(outputs=[Tensor("Y", "FP64", (2000,), big)], parameters={"p": "v"}),
        InferenceResponse(error=NotFoundError("nope"), final=True),
    ]
    payload, _ = wire.encode_responses(responses, writer)
    first, second = wire.decode_responses(payload, reader, "m")
    np.testing.assert_array_equal(first.outputs[0].data, big)
    assert first.parameters == {"p": "v"} and first.model_name == "m"
    assert isinstance(second.error, NotFoundError) and second.error.message == "nope"
    assert not [
        name for name in os.listdir(shm.shm_directory()) if name.startswith(writer.overflow_name(1))
    ]


@pytest.mark.parametrize(
    "described",
    [
        [[0, 64, 64, 64], ["X", "FP32", [100], 0, 400]],  # outside its block
        [[0, 64, 64, 64], ["X", "FP32", [3], 0, 8]],  # size does not fit the shape
        [[0, 64, 64, 64], ["X", "NOPE", [1], 0, 4]],  # unknown datatype
        [[0, 64, 64, 64], ["X", "FP32", [-1], 0, 4]],  # negative dimension
        [[0, 8, 64, 64], ["X", "FP32", [1], 0, 4]],  # block over the ring's header
    ],
)
def test_descriptors_that_do_not_add_up_are_refused(ring, described) -> None:
    _, reader = ring
    with pytest.raises((ValueError, KeyError)):
        wire.read_tensors(described, reader, copy=True)


def test_overflow_segments_from_elsewhere_are_refused() -> None:
    with pytest.raises(ValueError, match="not a segment"):
        shm.open_segment("../etc/passwd", 1)


def test_frames_split_anywhere_are_reassembled_and_oversized_ones_refused() -> None:
    seen: list[tuple[int, int, int, bytes]] = []
    frames = wire.FrameBuffer(lambda k, f, t, p: seen.append((k, f, t, bytes(p))))
    stream = wire.frame(wire.Kind.EXECUTE, 3, b"abc", 1) + wire.frame(wire.Kind.CANCEL, 4)
    for index in range(len(stream)):
        frames.feed(stream[index : index + 1])
    assert seen == [(wire.Kind.EXECUTE, 1, 3, b"abc"), (wire.Kind.CANCEL, 0, 4, b"")]
    with pytest.raises(ValueError, match="over the limit"):
        frames.feed(wire.HEADER.pack(1, 0, 0, 0, wire.MAX_PAYLOAD_BYTES + 1))


def _config(text: str) -> mc.ModelConfig:
    return text_format.Parse('name: "m"\n' + text, mc.ModelConfig())


def test_isolation_settings_come_from_the_model_config() -> None:
    settings = IsolationSettings.from_config(
        _config(
            'parameters { key: "isolation" value: { string_value: "process" } }\n'
            'parameters { key: "execution_timeout_ms" value: { string_value: "1500" } }'
        )
    )
    assert settings.isolated and settings.execution_timeout_s == 1.5
    assert not IsolationSettings.from_config(_config("")).isolated


@pytest.mark.parametrize(
    "parameters",
    [
        'parameters { key: "isolation" value: { string_value: "thread" } }',
        'parameters { key: "isolation" value: { string_value: "process" } }\n'
        'parameters { key: "execution_timeout_ms" value: { string_value: "-5" } }',
        'parameters { key: "isolation" value: { string_value: "process" } }\n'
        'parameters { key: "shm_ring_bytes" value: { string_value: "10" } }',
        'parameters { key: "execution_timeout_ms" value: { string_value: "100" } }',
    ],
)
def test_bad_isolation_settings_fail_the_load_naming_the_rule(parameters: str) -> None:
    with pytest.raises(ModelLoadError, match="model 'm'"):
        IsolationSettings.from_config(_config(parameters))


def test_exit_statuses_read_as_sentences() -> None:
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "was killed by signal 9 (SIGKILL)"
