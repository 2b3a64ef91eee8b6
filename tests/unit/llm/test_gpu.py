"""The engine on a CUDA device (skipped where none exists): fp32 greedy output equals
transformers on CPU, and bf16 / fp16 run with every block back at the end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from tests.unit.llm.conftest import make_engine
from tests.unit.llm.test_greedy_equality import prompts, reference, staggered

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_fp32_on_gpu_matches_transformers_on_cpu(tiny_llama: Path) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    engine = make_engine(tiny_llama, device="cuda", dtype="float32", num_blocks=256)
    engine.start()
    batch = prompts(8, seed=21)
    for prompt, got in zip(batch, asyncio.run(staggered(engine, batch, 16))):
        assert got == reference(tiny_llama, prompt, 16)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_on_gpu_generates(tiny_llama: Path, dtype: str) -> None:
    engine = make_engine(tiny_llama, device="cuda", dtype=dtype, num_blocks=None)
    assert engine.num_blocks > 0  # sized from the device's free memory
    engine.start()
    results = asyncio.run(staggered(engine, prompts(8, seed=22), 16))
    assert all(len(r) == 16 for r in results)
