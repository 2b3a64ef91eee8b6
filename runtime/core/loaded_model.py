"""A loaded model version: its normalized config, the lookups validation needs, its instances,
scheduler and statistics."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from trident.runtime.errors import ModelLoadError, UnavailableError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest

from . import model_config
from .in_flight import InFlightRequest
from .instances import InstanceWorker
from .scheduling.base import Scheduler
from .stats import ModelStats
from .validation import TensorSpec, tensor_specs

if TYPE_CHECKING:
    from .response_cache import ResponseCache
    from .scheduling.ensemble import EnsembleBinding

logger = logging.getLogger("trident.models")


class LoadedModel:
    """A model version that is loaded: its config, instances, scheduler and statistics."""

    __slots__ = (
        "backend_name",
        "config",
        "config_json",
        "decoupled",
        "ensemble",
        "has_reshape",
        "input_specs",
        "instance_slots",
        "labels",
        "max_batch_size",
        "model_dir",
        "name",
        "output_specs",
        "required_inputs",
        "response_cache",
        "scheduler",
        "stats",
        "submit",
        "version",
        "workers",
    )

    def __init__(
        self,
        name: str,
        version: int,
        config: mc.ModelConfig,
        backend_name: str,
        model_dir: Path,
    ) -> None:
        self.name = name
        self.version = version
        self.config = config
        self.config_json = model_config.config_to_json(config)
        self.backend_name = backend_name
        self.model_dir = model_dir
        self.decoupled = config.model_transaction_policy.decoupled
        self.max_batch_size = config.max_batch_size
        self.input_specs: dict[str, TensorSpec] = tensor_specs(list(config.input))
        self.output_specs: dict[str, TensorSpec] = tensor_specs(list(config.output))
        self.required_inputs = tuple(n for n, s in self.input_specs.items() if not s.optional)
        self.has_reshape = any(s.reshape is not None for s in self.input_specs.values())
        self.labels = _read_labels(model_dir, config)
        self.stats = ModelStats()
        self.workers: list[InstanceWorker] = []
        #: (instance group name, device id) of each worker, in the same order.
        self.instance_slots: list[tuple[str, int]] = []
        self.scheduler: Scheduler | None = None
        #: Set for `platform: "ensemble"` models (they have no instances).
        self.ensemble: EnsembleBinding | None = None
        #: The server's response cache when this model's config enables it.
        self.response_cache: ResponseCache | None = None
        self.submit = self._not_started

    def _not_started(self, request: InFlightRequest) -> None:
        raise UnavailableError(f"model '{self.name}' is not ready")

    def start(self, workers: list[InstanceWorker], scheduler: Scheduler) -> None:
        self.workers = workers
        self.scheduler = scheduler
        self.submit = scheduler.submit  # bound once: the hot path skips an attribute hop

    def health_reason(self) -> str:
        """What its instances report about their health (e.g. an isolated Python model's
        process that died and was restarted); empty when all is well."""
        reasons = [getattr(worker.instance, "health_reason", "") for worker in self.workers]
        return "; ".join(reason for reason in reasons if reason)

    def uses_shared_memory(self, request: InferenceRequest) -> bool:
        return any(tensor.shared_memory is not None for tensor in request.inputs)

    async def stop(self) -> None:
        self.submit = self._not_started
        for worker in self.workers:
            # An instance that can stop a hung execute (an isolated Python model's process)
            # arms that now: the scheduler waits for running executes below.
            unloading = getattr(worker.instance, "unloading", None)
            if unloading is not None:
                unloading()
        if self.scheduler is not None:
            await self.scheduler.stop()
        workers, self.workers = self.workers, []
        for worker in workers:
            try:
                await asyncio.to_thread(worker.close)
            except asyncio.CancelledError:
                raise
            except BaseException:  # a failing finalize (even SystemExit) must not stop the unload
                logger.exception("finalizing an instance of model '%s' failed", self.name)


def _read_labels(model_dir: Path, config: mc.ModelConfig) -> dict[str, list[str]]:
    labels = {}
    for output in config.output:
        if output.label_filename:
            path = model_dir / output.label_filename
            try:
                labels[output.name] = path.read_text().splitlines()
            except OSError as exc:
                raise ModelLoadError(
                    f"output '{output.name}': cannot read label_filename {path}: {exc.strerror}"
                ) from None
    return labels
