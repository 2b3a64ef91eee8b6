"""Schedulers: how a model version's requests reach its instances.

`create_scheduler` picks one from the model's config, the way Triton does: the sequence batcher
for `sequence_batching`, the dynamic batcher for `dynamic_batching`, else the direct scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler
from .direct import DirectScheduler

if TYPE_CHECKING:
    from trident.runtime.core.instances import InstanceWorker
    from trident.runtime.core.model_manager import LoadedModel


def create_scheduler(model: LoadedModel, workers: list[InstanceWorker]) -> Scheduler:
    return DirectScheduler(model.name, workers, model.stats, batched=model.max_batch_size > 0)


__all__ = ["Scheduler", "create_scheduler"]
