"""Builds one model version for the model manager: its instances created on their devices and
warmed up, its scheduler started; an ensemble version bound to its composing models; the response
cache each one uses; and an instance-count change applied to a live version.

The model manager decides what to load and keeps the states; this module only builds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from trident.backends.base import Backend, InferCallable, InstanceContext, StreamInferCallable
from trident.backends.registry import BackendRegistry
from trident.runtime.errors import ModelLoadError, TridentError
from trident.runtime.protocol import model_config_pb2 as mc

from . import model_config
from .instance_resize import resize_in_place
from .instances import InstanceWorker
from .loaded_model import LoadedModel
from .model_preparation import PreparedModel
from .response_cache import ResponseCache
from .scheduling import create_scheduler
from .scheduling.ensemble import EnsembleBinding
from .warmup import build_samples, warm_up

logger = logging.getLogger("trident.models")

#: Finds a READY model by name and version (0 = the highest): the model manager's `get`.
ModelLookup = Callable[[str, int], LoadedModel]


class VersionLoader:
    """Creates loaded model versions; `bind` must be called before the first load."""

    def __init__(self, backends: BackendRegistry, response_cache: ResponseCache | None) -> None:
        self.backends = backends
        #: The server-wide response cache (`--cache-config`); None when not configured.
        self.response_cache = response_cache
        self._loop: asyncio.AbstractEventLoop | None = None
        self._infer: InferCallable | None = None
        self._stream_infer: StreamInferCallable | None = None
        #: Handed to every instance (InstanceContext.extras), e.g. the Python backend's
        #: pb_utils.load_model / unload_model / is_model_ready.
        self._instance_extras: dict[str, object] = {}

    def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        infer: InferCallable,
        stream_infer: StreamInferCallable,
        instance_extras: dict[str, object],
    ) -> None:
        """The event loop, and how models call other models (BLS, ensembles)."""
        self._loop = loop
        self._infer = infer
        self._stream_infer = stream_infer
        self._instance_extras = instance_extras

    async def load(self, prepared: PreparedModel, version: int) -> LoadedModel:
        """Create the version's instances, warm them up, and start its scheduler."""
        assert self._loop is not None, "ModelManager.bind() must be called before loading"
        config = mc.ModelConfig()
        config.CopyFrom(prepared.config)
        model = LoadedModel(
            prepared.name, version, config, prepared.backend_name, prepared.model_dir
        )
        backend = self.backends.get(prepared.backend_name)
        workers: list[InstanceWorker] = []
        slots: list[tuple[str, int]] = []
        try:
            samples = build_samples(config, prepared.model_dir)
            for group in config.instance_group:
                kind = "GPU" if group.kind == mc.ModelInstanceGroup.KIND_GPU else "CPU"
                devices = list(group.gpus) if kind == "GPU" and group.gpus else [0]
                for device_id in devices:
                    for index in range(group.count):
                        instance_name = f"{group.name}_{len(workers)}"
                        workers.append(
                            await self.create_worker(
                                model, config, backend, instance_name, kind, device_id, index
                            )
                        )
                        slots.append((group.name, device_id))
            # Warmup runs before the version is published: it is READY only once warm.
            await warm_up(samples, workers, model.name, version, model.decoupled, self._loop)
        except Exception as exc:
            for worker in workers:
                await asyncio.to_thread(worker.close)
            if isinstance(exc, TridentError):
                raise
            raise ModelLoadError(f"{type(exc).__name__}: {exc}") from exc
        model.instance_slots = slots
        model.response_cache = self.cache_for(config)
        for worker in workers:
            worker.allow_inline(len(workers) == 1)
        model.start(workers, create_scheduler(model, workers))
        return model

    async def create_worker(
        self,
        model: LoadedModel,
        config: mc.ModelConfig,
        backend: Backend,
        instance_name: str,
        kind: str,
        device_id: int,
        index: int,
    ) -> InstanceWorker:
        """Create one instance (off the loop: backends load files) and its worker."""
        assert self._loop is not None
        context = InstanceContext(
            config=config,
            model_name=model.name,
            model_version=model.version,
            model_dir=model.model_dir,
            version_dir=model.model_dir / str(model.version),
            instance_name=instance_name,
            kind=kind,
            device_id=device_id,
            instance_index=index,
            loop=self._loop,
            infer=self._infer,
            stream_infer=self._stream_infer,
            config_json=model_config.config_to_json(config),
            extras=dict(self._instance_extras),
        )
        instance = await asyncio.to_thread(backend.create_instance, context)
        return InstanceWorker(instance_name, instance, self._loop)

    def load_ensemble(
        self, prepared: PreparedModel, version: int, lookup: ModelLookup
    ) -> LoadedModel:
        """An ensemble version whose composing models are READY: check its steps against
        their configs and start the ensemble scheduler."""
        graph = prepared.ensemble
        assert graph is not None and self._infer is not None
        config = mc.ModelConfig()
        config.CopyFrom(prepared.config)
        model = LoadedModel(
            prepared.name, version, config, prepared.backend_name, prepared.model_dir
        )
        graph.check_composing_models(config, lookup)
        model.ensemble = EnsembleBinding(graph, self._infer, lookup)
        model.response_cache = self.cache_for(config)
        model.start([], create_scheduler(model, []))
        return model

    def cache_for(self, config: mc.ModelConfig) -> ResponseCache | None:
        """The response cache a model uses: the server's, when its config enables it."""
        if not config.response_cache.enable:
            return None
        if self.response_cache is None:
            # Triton loads such a model and silently never caches; we say so.
            logger.warning(
                "model '%s' enables response_cache but the server has no response cache, so "
                "its responses are not cached: start the server with "
                "--cache-config=local,size=<bytes>",
                config.name,
            )
            return None
        if config.HasField("sequence_batching"):
            logger.warning(
                "model '%s': the response cache does not serve sequence models; not caching",
                config.name,
            )
            return None
        return self.response_cache

    async def resize_in_place(self, model: LoadedModel, prepared: PreparedModel) -> bool:
        """Apply a change of instance counts alone to the live model (see instance_resize)."""
        assert self._loop is not None
        return await resize_in_place(
            model, prepared.config, self.backends, self.create_worker, self._loop
        )
