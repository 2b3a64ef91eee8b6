"""Schedulers: how a model version's requests reach its instances.

`create_scheduler` picks one from the model's config, the way Triton does: the sequence batcher
for `sequence_batching`, the dynamic batcher for `dynamic_batching`, else the direct scheduler.
The three that run on instances share their bookkeeping: the instances are a `WorkerPool`
(worker_pool.py) and an execution's statistics and responses go out through delivery.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler
from .direct import DirectScheduler
from .dynamic_batcher import BatcherSettings, DynamicBatchScheduler
from .ensemble import EnsembleScheduler
from .sequence_batcher import SequenceBatcher

if TYPE_CHECKING:
    from trident.runtime.core.instances import InstanceWorker
    from trident.runtime.core.loaded_model import LoadedModel


def create_scheduler(model: LoadedModel, workers: list[InstanceWorker]) -> Scheduler:
    if model.ensemble is not None:
        return EnsembleScheduler.for_model(model)
    if model.config.HasField("sequence_batching"):
        return SequenceBatcher.for_model(model, workers)
    if model.config.HasField("dynamic_batching") and model.max_batch_size > 0:
        settings = BatcherSettings.from_config(model.config)
        return DynamicBatchScheduler(model.name, model.version, workers, model.stats, settings)
    return DirectScheduler(model.name, workers, model.stats, batched=model.max_batch_size > 0)


__all__ = ["Scheduler", "create_scheduler"]
