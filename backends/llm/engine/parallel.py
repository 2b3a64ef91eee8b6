"""Tensor parallelism: the model split over `tensor_parallel_size` processes with
torch.distributed (gloo on CPU, NCCL on GPU, one device per rank).

Rank 0 is the engine's own process: it schedules, samples and detokenizes as usual. Ranks 1..N-1
are worker processes that load the same checkpoint, keep their share of every layer (their
attention heads and MLP columns, `models/base.py` ShardSpec) and their share of the KV cache,
and run each forward pass in lockstep: before every step rank 0 broadcasts the step's inputs
(token ids, positions, cache slots, attention metadata); inside the model two all-reduces per
layer sum the row-parallel projections. Every rank computes the full logits; rank 0 samples.
"""

from __future__ import annotations

import multiprocessing.process
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trident.backends.llm.engine.models import ShardSpec, build_model
from trident.backends.llm.engine.runner import ModelRunner, StepInputs

#: Seconds the ranks wait for each other to join the process group.
INIT_TIMEOUT_S = 300


@dataclass(frozen=True)
class ShardLaunch:
    """What a worker needs to build its shard: the checkpoint and the engine's pool shape."""

    folder: Path
    gguf_file: str | None
    dtype: torch.dtype
    device_type: str
    max_positions: int
    num_blocks: int
    block_size: int
    max_len: int
    world_size: int
    init_method: str


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_method() -> str:
    return f"tcp://127.0.0.1:{free_loopback_port()}"


def device_for_rank(device_type: str, rank: int) -> torch.device:
    return torch.device(f"cuda:{rank}") if device_type == "cuda" else torch.device("cpu")


def join_group(launch: ShardLaunch, rank: int) -> None:
    import datetime

    backend = "nccl" if launch.device_type == "cuda" else "gloo"
    if launch.device_type == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend,
        init_method=launch.init_method,
        rank=rank,
        world_size=launch.world_size,
        timeout=datetime.timedelta(seconds=INIT_TIMEOUT_S),
    )


def _broadcast(inputs: StepInputs | None) -> StepInputs | None:
    box: list[Any] = [inputs]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _worker_main(launch: ShardLaunch, rank: int) -> None:
    """A worker rank: build the shard, then run every step rank 0 broadcasts, until None."""
    from trident.backends.llm.engine.loader import load_model_dir

    torch.set_num_threads(1)
    join_group(launch, rank)
    try:
        loaded = load_model_dir(launch.folder, launch.gguf_file)
        device = device_for_rank(launch.device_type, rank)
        shard = ShardSpec(rank, launch.world_size)
        model = build_model(
            loaded.arch, loaded.state, launch.dtype, device, launch.max_positions, shard
        )
        del loaded
        runner = ModelRunner(model, launch.num_blocks, launch.block_size, launch.max_len)
        with torch.inference_mode():
            while True:
                inputs = _broadcast(None)
                if inputs is None:
                    break
                if device.type != "cpu":
                    inputs = inputs.to(device)
                runner.forward(inputs)
    finally:
        dist.destroy_process_group()


class TensorParallelGroup:
    """Rank 0's handle on the worker processes: starts them, feeds them each step, stops them."""

    def __init__(self, launch: ShardLaunch) -> None:
        import torch.multiprocessing as mp

        self.launch = launch
        ctx = mp.get_context("spawn")
        self.workers: list[multiprocessing.process.BaseProcess] = []
        for rank in range(1, launch.world_size):
            p = ctx.Process(target=_worker_main, args=(launch, rank), daemon=True)
            p.start()
            self.workers.append(p)
        join_group(launch, 0)
        self.closed = False

    def before_forward(self, inputs: StepInputs) -> None:
        """Hand the step to the workers (they run it as rank 0 runs its own share)."""
        _broadcast(inputs)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            _broadcast(None)
        finally:
            for p in self.workers:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
            dist.destroy_process_group()


def rank0_shard(world_size: int) -> ShardSpec:
    return ShardSpec(0, world_size)
