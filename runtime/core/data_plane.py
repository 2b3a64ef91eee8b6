"""The data plane: the core's three services, held together for the frontends.

Every frontend (gRPC, HTTP, the metrics endpoint) holds one `DataPlane` and calls exactly one of
its parts per request:

- `inference` (inference.py): route, validate, submit, complete; `InferenceRequest` in,
  `InferenceResponse` out;
- `queries` (model_queries.py): health, server and model metadata, configuration, statistics,
  metrics;
- `admin` (administration.py): repository load and unload, shared-memory regions, trace and log
  settings.

Each returns plain values; the frontend renders them in its wire format. Nothing in the core
knows HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from trident.runtime.observability.log_settings import LogSettings
from trident.runtime.observability.trace_settings import TraceSettings
from trident.runtime.observability.tracing import Tracer

from .administration import Administration
from .cuda_shared_memory import CudaSharedMemoryRegistry
from .inference import InferenceService
from .model_manager import ModelManager
from .model_queries import ModelQueries
from .shared_memory import SharedMemoryRegistry


@dataclass(frozen=True, slots=True)
class DataPlane:
    """The three services over one set of models, plus the tracer that samples requests (the
    frontends stamp the wire-side trace points)."""

    inference: InferenceService
    queries: ModelQueries
    admin: Administration
    tracer: Tracer

    @classmethod
    def build(
        cls,
        models: ModelManager,
        shared_memory: SharedMemoryRegistry,
        cuda_shared_memory: CudaSharedMemoryRegistry,
        trace_settings: TraceSettings,
        log_settings: LogSettings,
        strict_readiness: bool = True,
    ) -> DataPlane:
        return cls(
            inference=InferenceService(models, shared_memory, cuda_shared_memory),
            queries=ModelQueries(models, cuda_shared_memory, strict_readiness),
            admin=Administration(
                models, shared_memory, cuda_shared_memory, trace_settings, log_settings
            ),
            tracer=trace_settings.tracer,
        )

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called by the server on its event loop thread before serving."""
        self.inference.bind_loop(loop)

    def begin_shutdown(self) -> None:
        """New requests are refused and the server reports not ready from now on."""
        self.inference.begin_shutdown()
        self.queries.begin_shutdown()

    def model_control(self) -> ModelControl:
        """What Python models' model loading API (pb_utils.load_model...) calls."""
        return ModelControl(self.admin, self.queries)


class ModelControl:
    """Triton's BLS model loading API over the core: load and unload are administration,
    readiness a query. Python models get this object at load time (the backend never imports
    the core)."""

    __slots__ = ("_admin", "_queries")

    def __init__(self, admin: Administration, queries: ModelQueries) -> None:
        self._admin = admin
        self._queries = queries

    async def load_model(
        self, name: str, config_json: str = "", files: dict[str, bytes] | None = None
    ) -> None:
        await self._admin.load_model(name, config_json, files)

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        await self._admin.unload_model(name, unload_dependents)

    def model_ready(self, name: str, version: str = "") -> bool:
        return self._queries.model_ready(name, version)
