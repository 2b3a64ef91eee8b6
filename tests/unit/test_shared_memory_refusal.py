"""Registries built with allow_registration=False (--allow-shared-memory=false) refuse before
they open a shared-memory object or load CUDA, and still answer status and unregister."""

from __future__ import annotations

import pytest

from tests.fake_cuda_runtime import FakeCudaRuntime
from trident.runtime.core.cuda_shared_memory import CudaSharedMemoryRegistry
from trident.runtime.core.shared_memory import SharedMemoryRegistry
from trident.runtime.errors import PermissionDeniedError


def test_system_registration_is_refused_before_the_object_is_opened() -> None:
    registry = SharedMemoryRegistry(allow_registration=False)
    # The key names no object: an allowed registry would fail to open it (InvalidArgumentError).
    with pytest.raises(PermissionDeniedError, match="--allow-shared-memory=false") as caught:
        registry.register("r", "/trident-no-such-object", 0, 64)
    assert caught.value.http_status == 403
    assert caught.value.grpc_code == "PERMISSION_DENIED"
    assert registry.status() == []
    registry.unregister()
    registry.unregister("r")


def test_cuda_registration_is_refused_before_cuda_is_loaded() -> None:
    # No runtime: an allowed registry would load libcudart here (501 on a host without a GPU).
    registry = CudaSharedMemoryRegistry(allow_registration=False)
    with pytest.raises(PermissionDeniedError, match=r"^CUDA shared memory registration is refused"):
        registry.register("c", b"\0" * 64, 0, 64)
    assert registry._runtime is None
    assert registry.status() == []
    registry.unregister()


def test_registries_allow_registration_by_default() -> None:
    runtime = FakeCudaRuntime()
    registry = CudaSharedMemoryRegistry(runtime)
    registry.register("c", runtime.allocate(64), 0, 64)
    assert [region.name for region in registry.status()] == ["c"]
    registry.unregister()
