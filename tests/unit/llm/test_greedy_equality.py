"""The engine's greedy output equals transformers' generate() token for token: tiny random
Llama-family models and GPT-2, many concurrent requests arriving at different steps, chunked
prefill, forced preemption, prefix-cache hits and several block sizes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from tests.unit.llm.conftest import build_llama, hf_greedy, hf_model, make_engine
from trident.backends.llm.engine import LLMEngine, SamplingParams

_REFS: dict[tuple[Path, tuple[int, ...], int], list[int]] = {}


def reference(folder: Path, prompt: list[int], n: int) -> list[int]:
    key = (folder, tuple(prompt), n)
    if key not in _REFS:
        _REFS[key] = hf_greedy(hf_model(folder), prompt, n)
    return _REFS[key]


def prompts(count: int, seed: int = 1, lo: int = 2, hi: int = 60) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(2, 512) for _ in range(rng.randint(lo, hi))] for _ in range(count)]


async def staggered(engine: LLMEngine, batch: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Request i is sent once request i-1 has had its first output, so requests join the
    running batch at different steps; every one runs concurrently with others."""
    got_output = [asyncio.Event() for _ in batch]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int) -> list[int]:
        if i:
            await got_output[i - 1].wait()
        tokens: list[int] = []
        async for out in engine.generate(f"req-{i}", batch[i], params):
            tokens += out.new_token_ids
            got_output[i].set()
        return tokens

    return list(await asyncio.gather(*(one(i) for i in range(len(batch)))))


def check(folder: Path, engine: LLMEngine, batch: list[list[int]], max_tokens: int) -> None:
    engine.start()
    results = asyncio.run(staggered(engine, batch, max_tokens))
    for prompt, got in zip(batch, results):
        assert got == reference(folder, prompt, max_tokens), f"diverged for prompt {prompt}"


@pytest.mark.parametrize("block_size", [1, 16, 32])
def test_concurrent_staggered_requests_match_transformers(
    tiny_llama: Path, block_size: int
) -> None:
    engine = make_engine(tiny_llama, block_size=block_size, num_blocks=2048 // block_size)
    check(tiny_llama, engine, prompts(12), 24)


def test_chunked_prefill_under_a_small_token_budget(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, max_num_batched_tokens=16, block_size=8, num_blocks=256)
    batch = prompts(6, seed=2, lo=20, hi=70)  # every prompt needs several chunks
    check(tiny_llama, engine, batch, 16)
    total = sum(len(p) for p in batch) + 6 * 16
    # Every computed token went through a step of at most 16 tokens.
    assert engine.stats().num_steps >= total // 16
    assert engine.metrics.snapshot().iteration_tokens_total.sum == total - 6


def test_long_prefill_threshold_chunks_prompts_that_fit_the_budget(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, long_prefill_token_threshold=7, num_blocks=128)
    check(tiny_llama, engine, prompts(4, seed=3, lo=30, hi=50), 12)


def test_forced_preemption_by_recompute(tiny_llama: Path) -> None:
    # 24 blocks of 4 slots hold about two of these sequences at once.
    engine = make_engine(tiny_llama, block_size=4, num_blocks=24, max_num_batched_tokens=64)
    check(tiny_llama, engine, prompts(8, seed=4, lo=15, hi=30), 24)
    assert engine.stats().num_preemptions > 0


def test_prefix_cache_hits(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, block_size=8, num_blocks=256)
    engine.start()
    shared = prompts(1, seed=5, lo=40, hi=40)[0]
    first = [[*shared, 7, 8, 9]]
    rest = [shared + tail for tail in ([10], [11, 12, 13], [14] * 9)] + [[*shared, 7, 8, 9]]
    asyncio.run(staggered(engine, first, 8))
    results = asyncio.run(staggered(engine, rest, 16))
    for prompt, got in zip(rest, results):
        assert got == reference(tiny_llama, prompt, 16)
    stats = engine.stats()
    assert stats.prefix_cache_hits >= 4 * 40 // 8 * 8
    assert stats.prefix_cache_queries >= stats.prefix_cache_hits


def test_prefix_caching_off_gives_the_same_tokens(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, enable_prefix_caching=False, num_blocks=256)
    check(tiny_llama, engine, prompts(4, seed=6), 12)
    assert engine.stats().prefix_cache_hits == 0


def test_gpt2_matches_transformers(tiny_gpt2: Path) -> None:
    engine = make_engine(tiny_gpt2, block_size=8, num_blocks=256, max_num_batched_tokens=32)
    check(tiny_gpt2, engine, prompts(6, seed=7), 16)


VARIANTS: dict[str, dict[str, Any]] = {
    "qwen2-qkv-bias": {"model_type": "qwen2"},
    "tied-embeddings-mha": {"tie_word_embeddings": True, "num_key_value_heads": 4},
    "llama3-rope": {
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        }
    },
    "linear-rope": {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_llama_family_variants_match_transformers(
    tmp_path_factory: pytest.TempPathFactory, variant: str
) -> None:
    folder = build_llama(tmp_path_factory.mktemp(variant) / variant, **VARIANTS[variant])
    engine = make_engine(folder, block_size=8, num_blocks=256)
    check(folder, engine, prompts(4, seed=8, hi=70), 12)


def test_bf16_on_cpu_follows_the_fp32_model(tiny_llama: Path) -> None:
    """bf16 rounding may change a near-tie, so the check is teacher-forced: fed the bf16
    engine's own tokens, transformers in fp32 ranks each of them at (or within a small margin
    of) the top. A broken bf16 path (a wrong cast, RoPE in low precision) misses by whole units
    of logit (their spread here is about 2.4)."""
    import torch

    engine = make_engine(tiny_llama, dtype="bfloat16", num_blocks=256)
    assert engine.runner.kv_caches[0][0].dtype == torch.bfloat16
    engine.start()
    batch = prompts(8, seed=31)
    results = asyncio.run(staggered(engine, batch, 16))
    model = hf_model(tiny_llama)
    for prompt, got in zip(batch, results):
        assert got[:3] == reference(tiny_llama, prompt, 16)[:3]
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + got])).logits[0, len(prompt) - 1 : -1]
        chosen = logits.gather(1, torch.tensor(got).unsqueeze(1)).squeeze(1)
        assert float((logits.max(dim=-1).values - chosen).max()) < 0.6
