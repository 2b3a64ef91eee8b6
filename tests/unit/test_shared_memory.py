import mmap
import os
import uuid

import numpy as np
import pytest

from trident.runtime.core.shared_memory import SharedMemoryRegistry
from trident.runtime.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from trident.runtime.types import SharedMemoryRef, Tensor


@pytest.fixture
def shm_key():
    key = f"trident-test-{uuid.uuid4().hex[:8]}"
    path = f"/dev/shm/{key}"
    with open(path, "wb") as handle:
        handle.write(b"\0" * 64)
    yield key, path
    os.unlink(path)


def test_register_read_write_and_bounds(shm_key):
    key, path = shm_key
    registry = SharedMemoryRegistry()
    registry.register("r", "/" + key, 0, 64)
    with pytest.raises(AlreadyExistsError):
        registry.register("r", "/" + key, 0, 64)
    with open(path, "r+b") as handle, mmap.mmap(handle.fileno(), 64) as region:
        region[0:16] = np.arange(4, dtype=np.float32).tobytes()
    tensor = Tensor("X", "FP32", (4,), shared_memory=SharedMemoryRef("r", 16, 0))
    registry.read_inputs([tensor])
    assert tensor.data.tolist() == [0, 1, 2, 3]

    out = Tensor("Y", "FP32", (2,), np.array([7, 8], np.float32))
    registry.write_output(out, SharedMemoryRef("r", 8, 32))
    with open(path, "rb") as handle:
        assert np.frombuffer(handle.read()[32:40], np.float32).tolist() == [7, 8]

    outside = Tensor("X", "FP32", (4,), shared_memory=SharedMemoryRef("r", 16, 56))
    with pytest.raises(InvalidArgumentError, match="runs past its end"):
        registry.read_inputs([outside])
    wrong_size = Tensor("X", "FP32", (4,), shared_memory=SharedMemoryRef("r", 12, 0))
    with pytest.raises(InvalidArgumentError, match="needs 16 bytes"):
        registry.read_inputs([wrong_size])
    assert [s.name for s in registry.status()] == ["r"]
    registry.unregister("r")
    with pytest.raises(NotFoundError):
        registry.status("r")


def test_register_checks_the_object(shm_key):
    key, _ = shm_key
    registry = SharedMemoryRegistry()
    with pytest.raises(InvalidArgumentError, match="exceeds"):
        registry.register("big", key, 0, 1 << 20)
    with pytest.raises(InvalidArgumentError, match="unable to open"):
        registry.register("missing", "no-such-key-xyz", 0, 8)
