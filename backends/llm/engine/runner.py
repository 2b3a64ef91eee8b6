"""The model runner: owns the model and the KV-cache tensors, turns a scheduler step into flat
input tensors and attention metadata, and returns the logits of the sequences that sample.

Input preparation is vectorised with numpy over the step's sequences (O(sequences) Python, not
O(tokens)) and the block tables are expanded into cache slots with tensor ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from trident.backends.llm.engine.attention import AttentionMetadata
from trident.backends.llm.engine.models import CausalLM
from trident.backends.llm.engine.scheduler import ScheduledRequest


@dataclass
class StepInputs:
    """Everything one forward pass needs (built on the host, moved to the device once)."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    logits_indices: torch.Tensor
    #: For each logits row, the index of its sequence in the step's scheduled list.
    sampling_rows: list[int]

    def to(self, device: torch.device) -> StepInputs:
        """The same inputs on another device (tensor-parallel ranks on their own GPU)."""
        meta = self.meta
        moved = AttentionMetadata(
            slot_mapping=meta.slot_mapping.to(device),
            gather_index=meta.gather_index.to(device),
            mask=meta.mask.to(device),
            decode_only=meta.decode_only,
            num_seqs=meta.num_seqs,
            max_query_len=meta.max_query_len,
            query_index=None if meta.query_index is None else meta.query_index.to(device),
            output_index=None if meta.output_index is None else meta.output_index.to(device),
        )
        return StepInputs(
            self.input_ids.to(device),
            self.positions.to(device),
            moved,
            self.logits_indices.to(device),
            self.sampling_rows,
        )


def kv_bytes_per_block(model: CausalLM, block_size: int) -> int:
    """Bytes of keys and values of one block over all layers (on this rank)."""
    elem = torch.empty((), dtype=model.dtype).element_size()
    return (
        2
        * model.arch.num_layers
        * block_size
        * model.kv_heads_per_rank()
        * (model.arch.head_dim * elem)
    )


class ModelRunner:
    """Runs the model over the paged cache: one `execute()` per engine step."""

    def __init__(self, model: CausalLM, num_blocks: int, block_size: int, max_len: int) -> None:
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.device = model.device
        shape = (num_blocks * block_size, model.kv_heads_per_rank(), model.arch.head_dim)
        self.kv_caches: list[tuple[torch.Tensor, torch.Tensor]] = [
            (
                torch.zeros(shape, dtype=model.dtype, device=model.device),
                torch.zeros(shape, dtype=model.dtype, device=model.device),
            )
            for _ in range(model.arch.num_layers)
        ]
        #: Called with each step's inputs before the forward pass (tensor parallelism hands
        #: them to the other ranks here).
        self.before_forward: Callable[[StepInputs], None] | None = None
        # Reused index vector: positions, query rows and context columns are slices of it.
        self.max_len = max_len
        self._arange = torch.arange(0, max_len + 1, device=model.device)

    def prepare(self, scheduled: list[ScheduledRequest]) -> StepInputs:
        """Flatten the step's tokens and build the attention metadata."""
        bs = self.block_size
        num_seqs = len(scheduled)
        starts = np.fromiter((s.start for s in scheduled), dtype=np.int64, count=num_seqs)
        qlens = np.fromiter((s.num_tokens for s in scheduled), dtype=np.int64, count=num_seqs)
        ctx = starts + qlens
        total = int(qlens.sum())
        max_q = int(qlens.max())
        max_ctx = int(ctx.max())
        max_blocks = -(-max_ctx // bs)
        table = np.zeros((num_seqs, max_blocks), dtype=np.int64)
        ids: list[int] = []
        for i, s in enumerate(scheduled):
            blocks = s.request.block_ids
            n = min(len(blocks), max_blocks)
            table[i, :n] = blocks[:n]
            ids.extend(s.request.token_ids[s.start : s.start + s.num_tokens])
        seq_of_token = np.repeat(np.arange(num_seqs), qlens)
        offsets = np.cumsum(qlens) - qlens
        index_in_seq = np.arange(total) - np.repeat(offsets, qlens)
        positions = index_in_seq + np.repeat(starts, qlens)
        slots = table[seq_of_token, positions // bs] * bs + positions % bs
        samples = np.fromiter((s.samples for s in scheduled), dtype=bool, count=num_seqs)
        sampling_rows = np.nonzero(samples)[0]
        logits_indices = (offsets + qlens - 1)[sampling_rows]

        dev = self.device
        table_t = torch.from_numpy(table).to(dev)
        ctx_t = torch.from_numpy(ctx).to(dev)
        cols = self._arange[:max_ctx]
        gather_index = table_t[:, cols // bs] * bs + cols % bs
        valid = cols.unsqueeze(0) < ctx_t.unsqueeze(1)  # [B, L]
        gather_index = gather_index * valid
        decode_only = max_q == 1
        if decode_only:
            mask = torch.zeros(valid.shape, dtype=self.model.dtype, device=dev)
            mask.masked_fill_(~valid, float("-inf"))
            meta = AttentionMetadata(
                slot_mapping=torch.from_numpy(slots).to(dev),
                gather_index=gather_index,
                mask=mask,
                decode_only=True,
                num_seqs=num_seqs,
                max_query_len=1,
            )
        else:
            qlens_t = torch.from_numpy(qlens).to(dev)
            rows = self._arange[:max_q]
            q_valid = rows.unsqueeze(0) < qlens_t.unsqueeze(1)  # [B, Q]
            qpos = ctx_t.unsqueeze(1) - qlens_t.unsqueeze(1) + rows.unsqueeze(0)  # [B, Q]
            mask = (cols.view(1, 1, -1) <= qpos.unsqueeze(2)) & valid.unsqueeze(1)
            # Padding query rows attend to position 0 only, so their softmax stays finite.
            mask[:, :, 0] |= ~q_valid
            offsets_t = torch.from_numpy(offsets).to(dev)
            query_index = (offsets_t.unsqueeze(1) + rows.unsqueeze(0)) * q_valid
            output_index = torch.from_numpy(
                seq_of_token * max_q + (np.arange(total) - np.repeat(offsets, qlens))
            ).to(dev)
            meta = AttentionMetadata(
                slot_mapping=torch.from_numpy(slots).to(dev),
                gather_index=gather_index,
                mask=mask.unsqueeze(1),
                decode_only=False,
                num_seqs=num_seqs,
                max_query_len=max_q,
                query_index=query_index.reshape(-1),
                output_index=output_index,
            )
        return StepInputs(
            input_ids=torch.tensor(ids, dtype=torch.int64, device=dev),
            positions=torch.from_numpy(positions).to(dev),
            meta=meta,
            logits_indices=torch.from_numpy(logits_indices).to(dev),
            sampling_rows=sampling_rows.tolist(),
        )

    @torch.inference_mode()
    def execute(self, scheduled: list[ScheduledRequest]) -> tuple[torch.Tensor, list[int]]:
        """Run one step; returns fp32 logits [sampling sequences, vocab] and, per row, the index
        of its sequence in `scheduled`."""
        inputs = self.prepare(scheduled)
        if self.before_forward is not None:
            self.before_forward(inputs)
        return self.forward(inputs), inputs.sampling_rows

    def forward(self, inputs: StepInputs) -> torch.Tensor:
        return self.model.forward(
            inputs.input_ids, inputs.positions, inputs.meta, self.kv_caches, inputs.logits_indices
        )
