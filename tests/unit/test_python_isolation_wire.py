"""The isolation channel's pieces without processes: rings, the codec, frames, settings."""

from __future__ import annotations

import json
import mmap
import os

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st

from trident.backends.python.isolation import shm, wire
from trident.backends.python.isolation.process import describe_exit
from trident.backends.python.isolation.settings import DEFAULT_BUSY_POLL_US, IsolationSettings
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


def _request(data: np.ndarray) -> InferenceRequest:
    words = np.array([b"a", b"bc", b""], dtype=np.object_)
    return InferenceRequest(
        "m",
        id="r1",
        inputs=[Tensor("X", "FP32", data.shape, data), Tensor("S", "BYTES", (3,), words)],
        outputs=[RequestedOutput("Y")],
        parameters={"k": 1},
        sequence_id="seq",
        sequence_start=True,
        timeout_us=5,
    )


def _check_decoded(decoded: wire.DecodedRequest, data: np.ndarray) -> None:
    assert decoded.tag == 7
    got = decoded.request
    assert (got.id, got.sequence_id, got.sequence_start, got.timeout_us) == ("r1", "seq", True, 5)
    assert got.parameters == {"k": 1} and [o.name for o in got.outputs] == ["Y"]
    by_name = {tensor.name: tensor for tensor in got.inputs}
    np.testing.assert_array_equal(by_name["X"].data, data)
    assert list(by_name["S"].data) == [b"a", b"bc", b""]


def test_large_requests_round_trip_with_views_of_shared_memory() -> None:
    memory = mmap.mmap(-1, shm.HEADER_BYTES + 4 * wire.INLINE_TENSOR_BYTES)
    writer, reader = shm.RingWriter(memory, "unused"), shm.RingReader(memory, "unused")
    data = np.arange(wire.INLINE_TENSOR_BYTES // 2, dtype=np.float32).reshape(-1, 4)
    payload, block = wire.encode_requests([(7, _request(data))], writer, 2)
    assert block is not None and len(payload) < 400  # metadata only: the bytes are in the ring
    (decoded,), got_block = wire.decode_requests(bytearray(payload), reader, copy=False)
    assert got_block == block
    _check_decoded(decoded, data)
    assert np.shares_memory(decoded.request.inputs[0].data, np.frombuffer(memory, np.uint8))


def test_small_requests_carry_their_tensors_in_the_frame(ring) -> None:
    writer, reader = ring
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    payload, block = wire.encode_requests([(7, _request(data))], writer, 2)
    assert block is None and writer.reserve(64)[0].offset == shm.HEADER_BYTES  # ring untouched
    owned = bytearray(payload)
    (decoded,), got_block = wire.decode_requests(owned, reader, copy=False)
    assert got_block is None
    _check_decoded(decoded, data)
    inputs = decoded.request.inputs[0].data
    assert np.shares_memory(inputs, np.frombuffer(owned, np.uint8))  # a view, no copy
    inputs[0, 0] = 42.0  # writable, as shared memory is: models may reuse their inputs


def test_responses_and_errors_round_trip_as_copies(ring) -> None:
    writer, reader = ring
    big = np.random.default_rng(1).standard_normal(20_000).astype(np.float64)  # > the ring
    responses = [
        InferenceResponse(outputs=[Tensor("Y", "FP64", (20_000,), big)], parameters={"p": "v"}),
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


@pytest.mark.parametrize(
    "described",
    [
        [None, ["X", "FP32", [16], 0, 64]],  # past the frame's 32 bytes of data
        [None, ["X", "FP32", [4], 24, 16]],  # starts inside, ends outside
        [None, ["X", "FP32", [3], 0, 16]],  # size does not fit the shape
        [[0, 64, 64, 64], ["X", "FP32", [4], 0, 16]],  # a ring block and frame data at once
    ],
)
def test_frame_data_descriptors_that_do_not_add_up_are_refused(ring, described) -> None:
    _, reader = ring
    with pytest.raises(ValueError):
        wire.read_tensors(described, reader, copy=False, data=memoryview(bytearray(32)))


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\xff" * 8 + b"[]", b"\x00" * 8 + b"nope"])
def test_payloads_shorter_than_they_say_or_not_json_are_refused(ring, payload) -> None:
    _, reader = ring
    with pytest.raises(ValueError):
        wire.decode_responses(payload, reader)


#: What a payload that does not decode raises: all of them ordinary Exceptions (a MemoryError or
#: a crash would be a defect).
_DECODE_ERRORS = (ValueError, KeyError, TypeError, IndexError, OverflowError)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=30,
)
_metadata = st.builds(
    lambda value: json.dumps(value).encode(),
    st.one_of(
        _json_values,
        # the real layout with any values: [[request or response fields], [block, tensors]]
        st.tuples(
            st.lists(st.lists(_json_values, max_size=10), max_size=3),
            st.lists(
                st.one_of(
                    st.none(),
                    st.lists(st.integers(-5, 5000), min_size=4, max_size=4),
                    st.tuples(
                        st.sampled_from(["X", 1]),
                        st.sampled_from(["FP32", "BYTES", "Q"]),
                        st.lists(st.integers(-2, 2**40), max_size=3),
                        st.integers(-8, 64),
                        st.integers(-8, 2**40),
                    ),
                ),
                max_size=4,
            ),
        ).map(list),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), _metadata))
def test_any_bytes_decode_to_requests_or_fail_with_an_error_the_server_catches(data) -> None:
    """A broken or hostile model process: the server treats anything it sends that does not
    decode (an ordinary Exception, caught in process.read_available) as that process failing."""
    memory = mmap.mmap(-1, shm.HEADER_BYTES + 4096)
    reader = shm.RingReader(memory, f"{shm.FILE_PREFIX}0-fuzz-")
    length = wire._DATA_LENGTH.pack
    for payload in (data, length(0) + data, length(32) + bytes(32) + data, length(99) + data):
        for decode in (
            lambda p: wire.decode_requests(p, reader, copy=True),
            lambda p: wire.decode_responses(p, reader),
        ):
            try:
                decode(payload)
            except _DECODE_ERRORS:
                pass


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
    assert settings.busy_poll_s == DEFAULT_BUSY_POLL_US / 1e6
    assert not IsolationSettings.from_config(_config("")).isolated
    polled = IsolationSettings.from_config(
        _config('parameters { key: "busy_poll_us" value: { string_value: "0" } }')
    )
    assert polled.busy_poll_s == 0.0


@pytest.mark.parametrize(
    "parameters",
    [
        'parameters { key: "isolation" value: { string_value: "thread" } }',
        'parameters { key: "isolation" value: { string_value: "process" } }\n'
        'parameters { key: "execution_timeout_ms" value: { string_value: "-5" } }',
        'parameters { key: "isolation" value: { string_value: "process" } }\n'
        'parameters { key: "shm_ring_bytes" value: { string_value: "10" } }',
        'parameters { key: "execution_timeout_ms" value: { string_value: "100" } }',
        'parameters { key: "busy_poll_us" value: { string_value: "2000000" } }',
        'parameters { key: "busy_poll_us" value: { string_value: "-1" } }',
    ],
)
def test_bad_isolation_settings_fail_the_load_naming_the_rule(parameters: str) -> None:
    with pytest.raises(ModelLoadError, match="model 'm'"):
        IsolationSettings.from_config(_config(parameters))


def test_exit_statuses_read_as_sentences() -> None:
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "was killed by signal 9 (SIGKILL)"


def test_the_busy_poll_flag_is_checked_on_the_command_line(capsys) -> None:
    from trident.runtime.cli import build_parser, settings_from_args

    parser = build_parser()
    args = parser.parse_args(["serve", "--python-isolation-busy-poll-us", "250"])
    assert settings_from_args(args).python_isolation_busy_poll_us == 250
    assert settings_from_args(parser.parse_args(["serve"])).python_isolation_busy_poll_us == 1000
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--python-isolation-busy-poll-us", "-1"])
    assert "expected 0 to 1000000 microseconds" in capsys.readouterr().err
