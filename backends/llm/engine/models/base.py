"""What every model implementation shares: the forward contract (flattened tokens in, logits only
for the positions that need them out), weight loading from a state dict, and tensor-parallel
sharding (each rank keeps its heads' and its MLP columns' share; two all-reduces per layer)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from trident.backends.llm.engine.attention import AttentionMetadata
from trident.backends.llm.engine.models.arch import ModelArch


@dataclass(frozen=True)
class ShardSpec:
    """This process's share of a tensor-parallel model: rank `rank` of `size`."""

    rank: int = 0
    size: int = 1
    group: Any = None  # a torch.distributed process group when size > 1

    def rows(self, n: int) -> slice:
        """The rows (output features) this rank keeps of a dimension of size n."""
        per = n // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum the partial results of a row-parallel projection across ranks."""
        if self.size > 1:
            torch.distributed.all_reduce(x, group=self.group)
        return x

    def first_only(self, bias: torch.Tensor) -> torch.Tensor:
        """A row-parallel projection's bias is added once: by rank 0, zero elsewhere."""
        return bias if self.rank == 0 else torch.zeros_like(bias)


def take(
    state: Mapping[str, torch.Tensor], dtype: torch.dtype, device: torch.device
) -> Callable[..., torch.Tensor]:
    """A getter for named weights, cast and moved once, optionally transposed and sliced."""

    def get(
        name: str,
        *,
        rows: slice | None = None,
        cols: slice | None = None,
        transpose: bool = False,
    ) -> torch.Tensor:
        if name not in state:
            raise KeyError(f"weight {name!r} is missing from the checkpoint")
        t = state[name]
        if transpose:
            t = t.t()
        if rows is not None:
            t = t[rows]
        if cols is not None:
            t = t[:, cols]
        return t.to(device=device, dtype=dtype).contiguous()

    return get


class CausalLM:
    """A decoder-only LM over the paged KV cache. Subclasses load weights and implement
    `hidden_states` and `final_norm`; `lm_head` is [vocab, hidden]."""

    lm_head: torch.Tensor

    def __init__(
        self, arch: ModelArch, dtype: torch.dtype, device: torch.device, shard: ShardSpec
    ) -> None:
        self.arch = arch
        self.dtype = dtype
        self.device = device
        self.shard = shard

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        logits_indices: torch.Tensor,
    ) -> torch.Tensor:
        """input_ids, positions: [T]; returns fp32 logits [len(logits_indices), vocab], computed
        only for those token rows (the last scheduled token of each sequence that samples)."""
        hidden = self.hidden_states(input_ids, positions, meta, kv_caches)
        hidden = self.final_norm(hidden[logits_indices])
        return torch.nn.functional.linear(hidden, self.lm_head).float()

    def kv_heads_per_rank(self) -> int:
        return self.arch.num_kv_heads // self.shard.size
