"""Sampling through the whole engine: seeds, top-k 1, logprobs, penalties, stop conditions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.unit.llm.conftest import collect, hf_greedy, hf_model, make_engine
from trident.backends.llm.engine import LLMEngine, SamplingParams
from trident.backends.llm.engine.sampler import Sampler, SamplingRow

PROMPT = [5, 9, 33, 81, 200, 17]


def tokens(outs: list[Any]) -> list[int]:
    return [t for o in outs for t in o.new_token_ids]


def text(outs: list[Any]) -> str:
    return "".join(o.new_text for o in outs)


def run_one(engine: LLMEngine, prompt: list[int] | str, **params: Any) -> list[Any]:
    return asyncio.run(collect(engine, "one", prompt, SamplingParams(**params)))


@pytest.fixture
def engine(tiny_llama: Path) -> LLMEngine:
    e = make_engine(tiny_llama, num_blocks=256, block_size=8)
    e.start()
    return e


def test_the_same_seed_gives_the_same_text_whatever_the_batch(engine: LLMEngine) -> None:
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=1234, ignore_eos=True)
    alone = tokens(asyncio.run(collect(engine, "alone", PROMPT, params)))

    async def crowded() -> list[int]:
        async def neighbour(i: int) -> None:
            await asyncio.sleep(0.001 * i)
            p = SamplingParams(max_tokens=10 + i, temperature=1.3, seed=i if i % 2 else None)
            await collect(engine, f"n{i}", [7 + i] * (3 + i), p)

        results = await asyncio.gather(
            *(neighbour(i) for i in range(5)), collect(engine, "crowded", PROMPT, params)
        )
        return tokens(results[-1])

    assert asyncio.run(crowded()) == alone
    other = SamplingParams(max_tokens=24, temperature=1.0, seed=99, ignore_eos=True)
    assert tokens(asyncio.run(collect(engine, "other", PROMPT, other))) != alone


def test_top_k_one_equals_greedy(engine: LLMEngine, tiny_llama: Path) -> None:
    sampled = run_one(engine, PROMPT, max_tokens=16, temperature=1.5, top_k=1, ignore_eos=True)
    assert tokens(sampled) == hf_greedy(hf_model(tiny_llama), PROMPT, 16)


def test_logprobs_are_the_models_log_softmax(engine: LLMEngine, tiny_llama: Path) -> None:
    outs = run_one(engine, PROMPT, max_tokens=6, temperature=0.0, logprobs=3, ignore_eos=True)
    generated = tokens(outs)
    with torch.inference_mode():
        logits = hf_model(tiny_llama)(torch.tensor([PROMPT + generated])).logits[0].float()
    want = torch.log_softmax(logits, dim=-1)[len(PROMPT) - 1 : -1]
    got = [lp for o in outs for lp in o.new_logprobs]
    assert [lp.token_id for lp in got] == generated
    for row, lp in zip(want, got):
        assert lp.logprob == pytest.approx(row[lp.token_id].item(), abs=1e-4)
        top_ids = row.topk(3).indices.tolist()
        assert [t.token_id for t in lp.top] == top_ids
        assert lp.top[0].token_id == lp.token_id  # greedy picks the top token
        assert isinstance(lp.text, str) and len(lp.top) == 3


def test_logprobs_zero_gives_only_the_sampled_token(engine: LLMEngine) -> None:
    outs = run_one(engine, PROMPT, max_tokens=3, logprobs=0, seed=1)
    assert all(len(o.new_logprobs) == 1 and o.new_logprobs[0].top == [] for o in outs)
    assert all(o.new_logprobs == [] for o in run_one(engine, PROMPT, max_tokens=3))


def test_repetition_penalty_matches_transformers(engine: LLMEngine, tiny_llama: Path) -> None:
    outs = run_one(
        engine, PROMPT, max_tokens=16, temperature=0.0, repetition_penalty=1.8, ignore_eos=True
    )
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        ref = hf_model(tiny_llama).generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=16,
            do_sample=False,
            repetition_penalty=1.8,
            eos_token_id=None,
            pad_token_id=None,
        )
    assert tokens(outs) == ref[0, len(PROMPT) :].tolist()


def test_presence_and_frequency_penalties_lower_repeated_tokens() -> None:
    sampler = Sampler(torch.device("cpu"), seed=0)
    logits = torch.zeros(1, 8)
    params = SamplingParams(temperature=0.0, presence_penalty=0.5, frequency_penalty=0.25)
    row = SamplingRow(params, [1, 2, 3, 3, 3, 4], 2, 4, (), None)
    sampler.sample(logits, [row])
    # Outputs are 3, 3, 3, 4: prompt tokens 1 and 2 are not penalised.
    assert logits[0].tolist() == [0, 0, 0, -1.25, -0.75, 0, 0, 0]


def test_top_p_and_min_p_keep_only_the_likely_tokens() -> None:
    sampler = Sampler(torch.device("cpu"), seed=0)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    for params, allowed in (
        (SamplingParams(top_p=0.7), {0, 1}),
        (SamplingParams(min_p=0.5), {0, 1}),
        (SamplingParams(top_k=3), {0, 1, 2}),
    ):
        seen = set()
        for _ in range(200):
            row = SamplingRow(params, [0], 1, 0, (), None)
            seen.add(sampler.sample(probs.log().clone(), [row]).token_ids[0])
        assert seen == allowed, params


def test_max_tokens_ends_with_length(engine: LLMEngine) -> None:
    outs = run_one(engine, PROMPT, max_tokens=5, temperature=0.0, ignore_eos=True)
    assert len(tokens(outs)) == 5 and outs[-1].num_output_tokens == 5
    assert outs[-1].finished and outs[-1].finish_reason == "length"
    assert not any(o.finished for o in outs[:-1])


def test_stop_token_ids_and_min_tokens(engine: LLMEngine) -> None:
    free = tokens(run_one(engine, PROMPT, max_tokens=12, temperature=0.0, ignore_eos=True))
    stop_at = free[2]
    first = free.index(stop_at)
    outs = run_one(engine, PROMPT, max_tokens=12, temperature=0.0, stop_token_ids=[stop_at])
    assert tokens(outs) == free[: first + 1]
    assert (outs[-1].finish_reason, outs[-1].stop_reason) == ("stop", stop_at)
    held = run_one(
        engine, PROMPT, max_tokens=12, temperature=0.0, stop_token_ids=[stop_at], min_tokens=8
    )
    assert stop_at not in tokens(held)[:8]


def test_eos_stops_unless_ignore_eos(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, num_blocks=64, block_size=8)
    engine.start()
    free = tokens(run_one(engine, PROMPT, max_tokens=10, temperature=0.0, ignore_eos=True))
    engine._eos = (free[3],)  # pretend the model's EOS is the 4th greedy token
    outs = run_one(engine, PROMPT, max_tokens=10, temperature=0.0)
    assert tokens(outs) == free[: free.index(free[3]) + 1]
    assert (outs[-1].finish_reason, outs[-1].stop_reason) == ("stop", None)
    assert tokens(run_one(engine, PROMPT, max_tokens=10, temperature=0.0, ignore_eos=True)) == free


def test_stop_strings_end_the_request_and_never_leak_while_streaming(engine: LLMEngine) -> None:
    free = run_one(engine, "the quick", max_tokens=30, temperature=0.0, ignore_eos=True)
    full = text(free)
    stop = full[10:13]
    assert stop and stop in full
    outs = run_one(engine, "the quick", max_tokens=30, temperature=0.0, stop=[stop])
    expected = full[: full.index(stop)]
    streamed = ""
    for o in outs:
        streamed += o.new_text
        assert expected.startswith(streamed)
    assert streamed == expected
    assert (outs[-1].finish_reason, outs[-1].stop_reason) == ("stop", stop)
    kept = run_one(
        engine,
        "the quick",
        max_tokens=30,
        temperature=0.0,
        stop=[stop],
        include_stop_str_in_output=True,
    )
    assert text(kept) == expected + stop
