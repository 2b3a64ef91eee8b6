"""A change of instance counts alone, applied to a live model without reloading it (Triton
does the same): new instances are created and warmed up, surplus ones retired by the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from trident.backends.base import Backend
from trident.backends.registry import BackendRegistry
from trident.runtime.errors import ModelLoadError, TridentError, UnsupportedError
from trident.runtime.protocol import model_config_pb2 as mc

from . import model_config
from .instances import InstanceWorker
from .loaded_model import LoadedModel
from .scheduling.base import Scheduler
from .warmup import build_samples, warm_up

logger = logging.getLogger("trident.models")

#: Creates one instance: (model, config, backend, instance name, kind, device id, index).
CreateWorker = Callable[
    [LoadedModel, mc.ModelConfig, Backend, str, str, int, int], Awaitable[InstanceWorker]
]


async def resize_in_place(
    model: LoadedModel,
    new_config: mc.ModelConfig,
    backends: BackendRegistry,
    create_worker: CreateWorker,
    loop: asyncio.AbstractEventLoop,
) -> bool:
    """Apply a config that differs from the live one only in instance_group counts by
    adding or removing instances, without unloading. False when that does not apply (the
    caller reloads); raises TridentError when new instances fail (the old ones keep
    serving)."""
    scheduler = model.scheduler
    if (
        model.ensemble is not None
        or scheduler is None
        or type(scheduler).resize is Scheduler.resize
        or not only_instance_counts_differ(model.config, new_config)
    ):
        return False
    config = mc.ModelConfig()
    config.CopyFrom(new_config)
    backend = backends.get(model.backend_name)
    current = list(zip(model.workers, model.instance_slots))
    used_names = {worker.name for worker in model.workers}
    kept: list[tuple[InstanceWorker, tuple[str, int]]] = []
    created: list[tuple[InstanceWorker, tuple[str, int]]] = []
    next_index = len(model.workers)
    try:
        for group in config.instance_group:
            kind = "GPU" if group.kind == mc.ModelInstanceGroup.KIND_GPU else "CPU"
            devices = list(group.gpus) if kind == "GPU" and group.gpus else [0]
            for device_id in devices:
                slot = (group.name, device_id)
                members = [pair for pair in current if pair[1] == slot]
                kept.extend(members[: group.count])
                for index in range(len(members), group.count):
                    while f"{group.name}_{next_index}" in used_names:
                        next_index += 1
                    name = f"{group.name}_{next_index}"
                    used_names.add(name)
                    worker = await create_worker(
                        model, config, backend, name, kind, device_id, index
                    )
                    created.append((worker, slot))
        samples = build_samples(config, model.model_dir)
        new_workers = [worker for worker, _ in created]
        await warm_up(samples, new_workers, model.name, model.version, model.decoupled, loop)
        workers = [worker for worker, _ in kept + created]
        for worker in workers:
            worker.allow_inline(len(workers) == 1)
        removed = await scheduler.resize(workers)
    except Exception as exc:
        for worker, _ in created:
            await asyncio.to_thread(worker.close)
        if isinstance(exc, UnsupportedError):
            return False
        if isinstance(exc, TridentError):
            raise
        raise ModelLoadError(f"{type(exc).__name__}: {exc}") from exc
    for worker in removed:
        try:
            await asyncio.to_thread(worker.close)
        except Exception:  # a model's finalize failing must not undo the change
            logger.exception("finalizing an instance of model '%s' failed", model.name)
    model.workers = workers
    model.instance_slots = [slot for _, slot in kept + created]
    model.config = config
    model.config_json = model_config.config_to_json(config)
    logger.info(
        "model '%s' version %d now has %d instance(s) (%d added, %d removed) without a reload",
        model.name,
        model.version,
        len(workers),
        len(created),
        len(removed),
    )
    return True


def model_files(
    entries: tuple[tuple[str, int, int], ...], model_dir: Path
) -> tuple[tuple[str, int, int], ...]:
    """A fingerprint without config.pbtxt: what must stay equal for an in-place change."""
    config_path = str(model_dir / model_config.CONFIG_FILENAME)
    return tuple(entry for entry in entries if entry[0] != config_path)


def only_instance_counts_differ(old: mc.ModelConfig, new: mc.ModelConfig) -> bool:
    """True when the configs are equal but for some instance_group `count`."""
    if len(old.instance_group) != len(new.instance_group):
        return False
    if [g.count for g in old.instance_group] == [g.count for g in new.instance_group]:
        return False
    left, right = mc.ModelConfig(), mc.ModelConfig()
    left.CopyFrom(old)
    right.CopyFrom(new)
    for group in list(left.instance_group) + list(right.instance_group):
        group.count = 0
    return left == right
