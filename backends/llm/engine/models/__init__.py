"""Model implementations, chosen by config.json's `model_type`."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from trident.backends.llm.engine.models.arch import (
    ModelArch,
    ModelKind,
    UnsupportedModel,
    arch_from_config,
)
from trident.backends.llm.engine.models.base import CausalLM, ShardSpec
from trident.backends.llm.engine.models.gpt2 import GPT2Model
from trident.backends.llm.engine.models.llama import LlamaModel


def build_model(
    arch: ModelArch,
    state: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
    device: torch.device,
    max_positions: int,
    shard: ShardSpec | None = None,
) -> CausalLM:
    """Build the model for `arch` from a Hugging Face state dict."""
    shard = shard or ShardSpec()
    if arch.num_heads % shard.size or arch.num_kv_heads % shard.size:
        raise UnsupportedModel(
            f"{arch.num_heads} heads / {arch.num_kv_heads} KV heads do not split over "
            f"{shard.size} ranks"
        )
    cls = LlamaModel if arch.kind is ModelKind.LLAMA else GPT2Model
    return cls(arch, state, dtype, device, max_positions, shard)


__all__ = [
    "CausalLM",
    "ModelArch",
    "ModelKind",
    "ShardSpec",
    "UnsupportedModel",
    "arch_from_config",
    "build_model",
]
