"""Warmup samples from `model_warmup`, run on fake instances: no server, no sockets."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from trident.backends.base import ModelInstance
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.model_config import parse_config_text
from trident.runtime.core.warmup import build_samples, warm_up
from trident.runtime.errors import ModelExecutionError, ModelLoadError
from trident.runtime.types import InferenceResponse, serialize_bytes_tensor

CONFIG = """
name: "m"
backend: "python"
max_batch_size: 8
input [ { name: "F" data_type: TYPE_FP32 dims: [ 2, 3 ] },
        { name: "I" data_type: TYPE_INT32 dims: [ 4 ] },
        { name: "S" data_type: TYPE_STRING dims: [ 2 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
model_warmup [
  { name: "zeros" batch_size: 3 count: 2 inputs [
      { key: "F" value: { data_type: TYPE_FP32 dims: [ 2, 3 ] zero_data: true } },
      { key: "I" value: { data_type: TYPE_INT32 dims: [ 4 ] random_data: true } },
      { key: "S" value: { data_type: TYPE_STRING dims: [ 2 ] input_data_file: "strings" } } ] },
  { name: "skipped" batch_size: 0 },
  { name: "once" batch_size: 1 inputs [
      { key: "I" value: { data_type: TYPE_INT32 dims: [ 4 ] input_data_file: "ints" } } ] }
]
"""


@pytest.fixture
def model_dir(tmp_path):
    warmup = tmp_path / "warmup"
    warmup.mkdir()
    (warmup / "strings").write_bytes(
        serialize_bytes_tensor(np.array([b"hi", b"there"], dtype=np.object_))
    )
    (warmup / "ints").write_bytes(np.array([1, 2, 3, 4, 99], dtype="<i4").tobytes())
    return tmp_path


def test_samples_follow_the_config(model_dir):
    samples = build_samples(parse_config_text(CONFIG), model_dir)
    assert [(s.name, s.batch_size, s.count) for s in samples] == [("zeros", 3, 2), ("once", 1, 1)]
    inputs = {i.name: i for i in samples[0].inputs}
    assert inputs["F"].shape == (1, 2, 3)  # batch-1 requests of a batching model
    assert not inputs["F"].data.any()
    assert inputs["I"].data.dtype == np.int32
    assert list(inputs["S"].data.reshape(-1)) == [b"hi", b"there"]
    (ints,) = samples[1].inputs
    np.testing.assert_array_equal(ints.data, [[1, 2, 3, 4]])  # extra bytes in the file ignored
    requests = samples[0].requests("m", 1)
    assert len(requests) == 3
    assert requests[0].input("F") is not None


def _bad(model_dir, old: str, new: str) -> str:
    assert old in CONFIG
    with pytest.raises(ModelLoadError) as info:
        build_samples(parse_config_text(CONFIG.replace(old, new, 1)), model_dir)
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("dims: [ 2, 3 ] zero_data", "dims: [ -1, 3 ] zero_data", "variable-size dimensions"),
        ('input_data_file: "ints"', 'input_data_file: "missing"', "cannot read input_data_file"),
        ('input_data_file: "ints"', 'input_data_file: "../../etc/passwd"', "must name a file"),
        (
            '{ key: "F" value: { data_type: TYPE_FP32',
            '{ key: "F" value: { data_type: TYPE_INT8',
            "is TYPE_INT8 in the warmup setting but TYPE_FP32",
        ),
        ("dims: [ 2, 3 ] zero_data: true", "dims: [ 2, 3 ]", "to have input_data_type set"),
    ],
)
def test_bad_samples_are_reported(model_dir, old, new, message):
    text = _bad(model_dir, old, new)
    assert text.startswith("failed to run warmup sample '")
    assert message in text


def test_a_short_data_file_is_reported(model_dir):
    (model_dir / "warmup" / "ints").write_bytes(b"\0" * 6)
    text = _bad(model_dir, "zero_data: true", "zero_data: true")
    assert "warmup setting expects 16 bytes, but the data provided from ints only has 6" in text


class Recorder(ModelInstance):
    def __init__(self, fail_on: int = 0) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on

    def execute(self, requests, timing):
        self.batches.append(len(requests))
        if self.fail_on and len(self.batches) == self.fail_on:
            return [InferenceResponse(error=ModelExecutionError("bad input")) for _ in requests]
        return [InferenceResponse() for _ in requests]


def _warm(samples, instances):
    async def scenario():
        loop = asyncio.get_running_loop()
        workers = [InstanceWorker(f"w{i}", inst, loop) for i, inst in enumerate(instances)]
        try:
            await warm_up(samples, workers, "m", 1, False, loop)
        finally:
            for worker in workers:
                worker.close()

    asyncio.run(scenario())


def test_every_instance_runs_every_sample_count_times(model_dir):
    samples = build_samples(parse_config_text(CONFIG), model_dir)
    instances = [Recorder(), Recorder()]
    _warm(samples, instances)
    for instance in instances:
        assert instance.batches == [3, 3, 1]  # "zeros" twice (3 requests each), "once" once


def test_a_failing_response_fails_the_warmup(model_dir):
    samples = build_samples(parse_config_text(CONFIG), model_dir)
    with pytest.raises(ModelLoadError) as info:
        _warm(samples, [Recorder(fail_on=2)])
    assert str(info.value).startswith("failed to run warmup sample 'zeros': bad input")
