"""Where an engine runs: its dtype, its torch threads and the size of its KV-cache pool."""

from __future__ import annotations

import os

import torch

from trident.backends.llm.engine.errors import InvalidSamplingParams
from trident.backends.llm.engine.models import CausalLM
from trident.backends.llm.engine.params import EngineConfig
from trident.backends.llm.engine.runner import kv_bytes_per_block

#: KV-cache size on CPU when neither num_blocks nor kv_cache_bytes is set.
DEFAULT_CPU_KV_CACHE_BYTES = 512 * 1024 * 1024
_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def resolve_dtype(config: EngineConfig) -> torch.dtype:
    if config.dtype == "auto":
        return torch.float32 if config.device == "cpu" else torch.bfloat16
    return _DTYPES[config.dtype]


def default_num_threads() -> int:
    """All cores but one (the event loop keeps one), and at least one.

    On two cores this means one engine thread: measured on a 2-core box shared with other
    jobs, two OpenMP threads made a decode step several times slower than one (their workers
    spin-wait for a core that another process holds), and they starve the event loop."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


def size_pool(config: EngineConfig, model: CausalLM) -> int:
    """KV blocks for the pool: num_blocks, else kv_cache_bytes, else (GPU) what
    gpu_memory_fraction leaves after the weights and a step's activations, else (CPU)
    DEFAULT_CPU_KV_CACHE_BYTES; capped at max_num_seqs sequences of max_model_len."""
    if config.num_blocks is not None:
        return config.num_blocks
    per_block = kv_bytes_per_block(model, config.block_size)
    if config.kv_cache_bytes is not None:
        budget = config.kv_cache_bytes
    elif model.device.type == "cuda":
        free, total = torch.cuda.mem_get_info(model.device)
        used = total - free
        # Activations of a full step: hidden states and MLP intermediates of every batched
        # token, plus one step's fp32 logits; a generous estimate, not a profile.
        arch = model.arch
        step = (
            config.max_num_batched_tokens
            * ((6 * arch.hidden_size + 3 * arch.intermediate_size) * 4)
            + config.max_num_seqs * arch.vocab_size * 4 * 4
        )
        budget = int(total * config.gpu_memory_fraction) - used - step
    else:
        budget = DEFAULT_CPU_KV_CACHE_BYTES
    blocks = budget // per_block
    if blocks < 1:
        raise InvalidSamplingParams(
            "kv_cache_bytes", f"leaves no room for one KV block ({per_block} bytes)"
        )
    # No more than every sequence at full length can use (a small model on a big device
    # would otherwise get millions of blocks it never needs).
    max_len = config.max_model_len or model.arch.max_position
    useful = config.max_num_seqs * -(-max_len // config.block_size)
    return int(min(blocks, useful))
