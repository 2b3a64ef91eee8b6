"""Tensor parallelism over two processes on this machine (gloo): greedy output identical to
transformers on one device, and every block back at the end on rank 0."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.unit.llm.conftest import build_gpt2, build_llama, hf_greedy, hf_model, make_engine
from tests.unit.llm.test_greedy_equality import prompts, staggered


@pytest.mark.parametrize("kind", ["qwen2", "gpt2"])
def test_two_ranks_give_the_single_device_greedy_output(
    tmp_path_factory: pytest.TempPathFactory, kind: str
) -> None:
    folder: Path = tmp_path_factory.mktemp(f"tp-{kind}") / kind
    if kind == "gpt2":
        build_gpt2(folder)
    else:
        build_llama(folder, model_type="qwen2")  # GQA 4/2 heads and q/k/v biases, split in two
    engine = make_engine(folder, tensor_parallel_size=2, block_size=8, num_blocks=128)
    assert engine.model.shard.size == 2
    assert engine.runner.kv_caches[0][0].shape[1] == engine.arch.num_kv_heads // 2
    engine.start()
    batch = prompts(4, seed=11)
    results = asyncio.run(staggered(engine, batch, 12))
    for prompt, got in zip(batch, results):
        assert got == hf_greedy(hf_model(folder), prompt, 12)
