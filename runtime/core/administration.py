"""Administration: what changes the server's state on a client's request (the model repository's
load and unload, shared-memory regions, trace and log settings).

Every answer is a plain value (index entries, region statuses, settings by name); each frontend
renders it in its own wire format.
"""

from __future__ import annotations

from trident.runtime.errors import AlreadyExistsError, NotFoundError
from trident.runtime.observability.log_settings import LogSettings
from trident.runtime.observability.trace_settings import TraceSettings

from .cuda_shared_memory import CudaSharedMemoryRegistry, CudaShmRegionStatus
from .model_manager import ModelManager, RepositoryIndexEntry
from .shared_memory import SharedMemoryRegistry, SystemShmRegionStatus


class Administration:
    """Repository control, shared-memory registration, trace and log settings."""

    def __init__(
        self,
        models: ModelManager,
        shared_memory: SharedMemoryRegistry,
        cuda_shared_memory: CudaSharedMemoryRegistry,
        trace_settings: TraceSettings,
        log_settings: LogSettings,
    ) -> None:
        self._models = models
        self._shared_memory = shared_memory
        self._cuda_shared_memory = cuda_shared_memory
        self._trace_settings = trace_settings
        self._log_settings = log_settings

    # ---------------------------------------------------------------- model repository

    async def repository_index(
        self, repository: str = "", ready_only: bool = False
    ) -> list[RepositoryIndexEntry]:
        return self._models.index(repository, ready_only)

    async def load_model(
        self, name: str, config_json: str = "", files: dict[str, bytes] | None = None
    ) -> None:
        """Load (or reload) `name`; `config_json` overrides its config and `files` maps
        '<version>/<file name>' to contents (the repository load API's parameters)."""
        await self._models.load_via_api(name, config_json, files or {})

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        await self._models.unload_via_api(name, unload_dependents)

    # ---------------------------------------------------------------- shared memory

    def system_shm_status(self, name: str = "") -> list[SystemShmRegionStatus]:
        return self._shared_memory.status(name)

    def system_shm_register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        # System and CUDA regions share one namespace (as in Triton), so a request's
        # shared_memory_region names exactly one region.
        if name in self._cuda_shared_memory:
            raise AlreadyExistsError(
                f"shared memory region '{name}' is already registered as CUDA shared memory; "
                "unregister it first"
            )
        self._shared_memory.register(name, key, offset, byte_size)

    def system_shm_unregister(self, name: str = "") -> None:
        self._shared_memory.unregister(name)

    def cuda_shm_status(self, name: str = "") -> list[CudaShmRegionStatus]:
        return self._cuda_shared_memory.status(name)

    def cuda_shm_register(
        self, name: str, raw_handle: bytes, device_id: int, byte_size: int
    ) -> None:
        """Register a CUDA IPC handle; UnsupportedError where there is no GPU."""
        if name and self._is_system_region(name):
            raise AlreadyExistsError(
                f"shared memory region '{name}' is already registered as system shared "
                "memory; unregister it first"
            )
        self._cuda_shared_memory.register(name, raw_handle, device_id, byte_size)

    def cuda_shm_unregister(self, name: str = "") -> None:
        self._cuda_shared_memory.unregister(name)

    def _is_system_region(self, name: str) -> bool:
        try:
            self._shared_memory.status(name)
        except NotFoundError:
            return False
        return True

    # ---------------------------------------------------------------- trace and log settings

    def get_trace_settings(self, model: str = "") -> dict[str, list[str]]:
        """Trace settings by Triton's names (values as strings); a model's own where it has
        them, the global ones otherwise."""
        if model:
            self._models.get_any(model)
        return self._trace_settings.get(model)

    def update_trace_settings(
        self, model: str, updates: dict[str, list[str] | None]
    ) -> dict[str, list[str]]:
        """Apply `updates` (None clears a setting) and return the settings now in force."""
        if model:
            self._models.get_any(model)
        return self._trace_settings.update(model, updates)

    def get_log_settings(self) -> dict[str, bool | int | str]:
        return self._log_settings.as_dict()

    def update_log_settings(self, updates: dict[str, object]) -> dict[str, bool | int | str]:
        return self._log_settings.update(updates)
