"""Attention over the paged KV cache, in plain PyTorch (CPU and GPU alike).

Each layer's cache is two tensors of shape [num_blocks * block_size, kv_heads, head_dim]: a token
of a sequence lives in slot `block_table[pos // block_size] * block_size + pos % block_size`.
A step's tokens arrive flattened (all sequences one after another). Attention:
1. writes the step's new keys and values into their slots (`slot_mapping`);
2. gathers each sequence's whole context through its block table into a padded
   [num_seqs, max_context, kv_heads, head_dim] view (`gather_index`);
3. runs attention with a mask that is causal with the sequence's offset and hides the padding.
Decode-only steps (one query per sequence, the common case) skip the query padding and compute
grouped-query attention without expanding the key/value heads. Steps with prefill chunks use
`scaled_dot_product_attention` (fused kernels on GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionMetadata:
    """Where a step's tokens go and what each one may attend to; built once per step."""

    #: [num_tokens] cache slot of each new token.
    slot_mapping: torch.Tensor
    #: [num_seqs, max_context] cache slot of each context position (0 past a sequence's end).
    gather_index: torch.Tensor
    #: Decode-only: [num_seqs, 1, 1, max_context] additive float mask (0 or -inf).
    #: Otherwise: [num_seqs, 1, max_query, max_context] boolean mask (True: may attend).
    mask: torch.Tensor
    decode_only: bool
    num_seqs: int
    max_query_len: int
    #: Prefill steps only: [num_seqs * max_query] flat token index of each padded query row
    #: (0 for padding), and [num_tokens] padded row of each flat token.
    query_index: torch.Tensor | None = None
    output_index: torch.Tensor | None = None


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, Hkv, D] for the step's tokens. Returns [T, H * D]."""
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    k_cache.index_copy_(0, meta.slot_mapping, k)
    v_cache.index_copy_(0, meta.slot_mapping, v)
    keys = k_cache[meta.gather_index]  # [B, L, Hkv, D]
    values = v_cache[meta.gather_index]
    b = meta.num_seqs
    if meta.decode_only:
        group = num_heads // num_kv_heads
        # [B, Hkv, G, D] @ [B, Hkv, D, L]: every query head of a group shares its key head.
        qg = q.view(b, num_kv_heads, group, head_dim)
        scores = torch.matmul(qg, keys.permute(0, 2, 3, 1)) * scale
        scores = scores + meta.mask.view(b, 1, 1, -1)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, values.transpose(1, 2))  # [B, Hkv, G, D]
        return out.reshape(num_tokens, num_heads * head_dim)
    assert meta.query_index is not None and meta.output_index is not None
    qp = q[meta.query_index].view(b, meta.max_query_len, num_heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(
        qp,
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=meta.mask,
        scale=scale,
        enable_gqa=num_kv_heads != num_heads,
    )
    out = out.transpose(1, 2).reshape(b * meta.max_query_len, num_heads * head_dim)
    return out[meta.output_index]


def reference_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context_slots: list[torch.Tensor],
    query_lens: list[int],
    scale: float,
) -> torch.Tensor:
    """The oracle for `paged_attention`: one sequence at a time, no padding. The step's keys and
    values must already be in the cache. Used by the tests only."""
    outputs = []
    start = 0
    for slots, qlen in zip(context_slots, query_lens):
        ctx = slots.numel()
        qs = q[start : start + qlen].transpose(0, 1)  # [H, q, D]
        keys = k_cache[slots].transpose(0, 1)
        values = v_cache[slots].transpose(0, 1)
        group = qs.shape[0] // keys.shape[0]
        keys = keys.repeat_interleave(group, 0)
        values = values.repeat_interleave(group, 0)
        qpos = torch.arange(ctx - qlen, ctx).unsqueeze(1)
        allowed = torch.arange(ctx).unsqueeze(0) <= qpos
        scores = (qs @ keys.transpose(1, 2)) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = torch.softmax(scores, -1) @ values
        outputs.append(out.transpose(0, 1).reshape(qlen, -1))
        start += qlen
    return torch.cat(outputs)
