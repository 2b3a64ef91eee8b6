"""Padded paged attention (batched, one call for all sequences) against the one-sequence-at-a-time
oracle, for decode-only and mixed prefill/decode steps, GQA and several block sizes."""

from __future__ import annotations

import random

import pytest
import torch

from trident.backends.llm.engine import SamplingParams
from trident.backends.llm.engine.attention import paged_attention, reference_attention
from trident.backends.llm.engine.request import Request
from trident.backends.llm.engine.runner import ModelRunner
from trident.backends.llm.engine.scheduler import ScheduledRequest


class _Arch:
    num_layers, head_dim, num_kv_heads = 1, 8, 2


class _Model:
    arch = _Arch()
    dtype = torch.float64
    device = torch.device("cpu")

    def kv_heads_per_rank(self) -> int:
        return 2


def scheduled_step(
    block_size: int, num_blocks: int, shapes: list[tuple[int, int]], rng: random.Random
) -> list[ScheduledRequest]:
    """Sequences with (already computed, new) token counts and shuffled block tables."""
    free = list(range(num_blocks))
    rng.shuffle(free)
    out = []
    for i, (done, new) in enumerate(shapes):
        total = done + new
        r = Request(f"r{i}", [1] * total, SamplingParams())
        r.block_ids = [free.pop() for _ in range(-(-total // block_size))]
        out.append(ScheduledRequest.of(r, done, new))
    return out


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize(
    "shapes",
    [
        [(5, 1), (17, 1), (0, 1), (40, 1)],  # decode only
        [(0, 9), (12, 1), (3, 5), (30, 1)],  # prefill chunks among decodes
        [(0, 33)],  # one whole prompt
    ],
)
def test_paged_attention_matches_the_per_sequence_oracle(
    block_size: int, shapes: list[tuple[int, int]]
) -> None:
    rng = random.Random(block_size)
    torch.manual_seed(0)
    num_blocks = 128 // block_size * 4
    runner = ModelRunner(_Model(), num_blocks, block_size, max_len=256)  # type: ignore[arg-type]
    k_cache, v_cache = runner.kv_caches[0]
    k_cache.normal_()
    v_cache.normal_()
    step = scheduled_step(block_size, num_blocks, shapes, rng)
    inputs = runner.prepare(step)
    t = sum(n for _, n in shapes)
    q = torch.randn(t, 4, 8, dtype=torch.float64)  # 4 query heads share 2 KV heads
    k = torch.randn(t, 2, 8, dtype=torch.float64)
    v = torch.randn(t, 2, 8, dtype=torch.float64)
    got = paged_attention(q, k, v, k_cache, v_cache, inputs.meta, scale=8**-0.5)
    slots = []
    for s in step:
        positions = torch.arange(s.start + s.num_tokens)
        table = torch.tensor(s.request.block_ids)
        slots.append(table[positions // block_size] * block_size + positions % block_size)
    want = reference_attention(q, k_cache, v_cache, slots, [n for _, n in shapes], 8**-0.5)
    torch.testing.assert_close(got, want)
    assert inputs.meta.decode_only == all(n == 1 for _, n in shapes)


def test_new_keys_land_in_their_slots() -> None:
    runner = ModelRunner(_Model(), 8, 4, max_len=64)  # type: ignore[arg-type]
    step = scheduled_step(4, 8, [(2, 3)], random.Random(1))
    inputs = runner.prepare(step)
    blocks = step[0].request.block_ids
    want = [blocks[p // 4] * 4 + p % 4 for p in (2, 3, 4)]
    assert inputs.meta.slot_mapping.tolist() == want
    assert inputs.positions.tolist() == [2, 3, 4]
    assert inputs.logits_indices.tolist() == [2] and inputs.sampling_rows == [0]
