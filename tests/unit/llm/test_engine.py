"""The engine's request lifecycle: cancellation, backpressure, bad requests, shutdown, metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.unit.llm.conftest import collect, hf_greedy, hf_model, make_engine
from trident.backends.llm.engine import (
    EngineOverloaded,
    InvalidSamplingParams,
    LLMEngine,
    PromptTooLong,
    SamplingParams,
)

LONG = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)


async def wait_until_idle(engine: LLMEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = engine.stats()
        if s.kv_blocks_used == 0 and s.num_running == 0 and s.num_waiting == 0:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"engine still busy: {engine.stats()}")


def test_closing_the_stream_aborts_the_request_and_frees_its_blocks(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, num_blocks=128, block_size=4)
    engine.start()
    other_prompt = [3, 4, 5, 6]

    async def main() -> list[int]:
        other = asyncio.create_task(
            collect(
                engine,
                "other",
                other_prompt,
                SamplingParams(max_tokens=30, temperature=0, ignore_eos=True),
            )
        )
        stream = engine.generate("victim", list(range(10, 40)), LONG)
        got = 0
        async for _ in stream:
            got += 1
            if got == 3:
                break
        victim = engine._requests["victim"]
        generated_at_close = victim.num_output_tokens
        await stream.aclose()
        while "victim" in engine._requests:
            await asyncio.sleep(0.001)
        # Aborted at the next step boundary: at most the step in flight generated for it.
        assert victim.num_output_tokens <= generated_at_close + 1
        assert victim.finish_reason == "abort" and victim.block_ids == []
        outs = await other
        await wait_until_idle(engine)
        return [t for o in outs for t in o.new_token_ids]

    others = asyncio.run(main())
    assert others == hf_greedy(hf_model(tiny_llama), other_prompt, 30)
    snap = engine.metrics.snapshot()
    assert snap.request_success_total["abort"] == 1
    assert snap.request_success_total["length"] == 1


def test_cancelling_the_consuming_task_aborts_the_request(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, num_blocks=128, block_size=4)
    engine.start()

    async def main() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in engine.generate("victim", list(range(10, 40)), LONG):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        assert engine.stats().kv_blocks_used > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until_idle(engine, timeout=5.0)

    asyncio.run(main())
    assert engine.metrics.snapshot().request_success_total["abort"] == 1


def test_a_full_waiting_queue_refuses_with_overloaded_and_shutdown_aborts(
    tiny_llama: Path,
) -> None:
    engine = make_engine(tiny_llama, max_waiting=2)  # not started: requests stay queued

    async def main() -> list[str | None]:
        streams = [engine.generate(f"r{i}", [5, 6, 7], LONG) for i in range(3)]
        firsts = [asyncio.create_task(s.__anext__()) for s in streams[:2]]
        await asyncio.sleep(0.01)
        with pytest.raises(EngineOverloaded):
            await streams[2].__anext__()
        await asyncio.to_thread(engine.shutdown)
        outs = [await f for f in firsts]
        return [o.finish_reason for o in outs if o.finished]

    assert asyncio.run(main()) == ["abort", "abort"]


def test_bad_requests_are_refused_before_anything_is_queued(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, max_model_len=32)
    engine.start()

    async def first(prompt: object, params: SamplingParams | None = None, rid: str = "x") -> object:
        return await engine.generate(rid, prompt, params or SamplingParams()).__anext__()  # type: ignore[arg-type]

    with pytest.raises(PromptTooLong):
        asyncio.run(first(list(range(32))))
    with pytest.raises(PromptTooLong):
        asyncio.run(first("the quick brown fox " * 50))
    for bad in ([], [1, 512], [1, -1], [1, True], "", 3):
        with pytest.raises(InvalidSamplingParams):
            asyncio.run(first(bad))
    with pytest.raises(InvalidSamplingParams):
        asyncio.run(first([1, 2], rid=""))
    assert engine.stats().num_waiting == 0 and engine.stats().kv_blocks_used == 0
    # A prompt of max_model_len - 1 tokens fits and gets one token ("length").
    out = asyncio.run(collect(engine, "fits", list(range(31)), SamplingParams(max_tokens=8)))
    assert out[-1].num_output_tokens == 1 and out[-1].finish_reason == "length"


def test_duplicate_request_ids_are_refused(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama)
    engine.start()

    async def main() -> None:
        stream = engine.generate("same", [4, 5], LONG)
        await stream.__anext__()
        with pytest.raises(InvalidSamplingParams):
            await engine.generate("same", [4, 5], LONG).__anext__()
        await stream.aclose()

    asyncio.run(main())


def test_metrics_count_requests_and_tokens(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, num_blocks=128, block_size=8)
    engine.start()
    prompts = [[3, 4, 5], list(range(20, 41)), [9] * 7]

    async def main() -> list[list[object]]:
        return await asyncio.gather(
            *(
                collect(
                    engine,
                    f"m{i}",
                    p,
                    SamplingParams(max_tokens=5 + i, temperature=0, ignore_eos=True),
                )
                for i, p in enumerate(prompts)
            )
        )

    asyncio.run(main())
    snap = engine.metrics.snapshot()
    generated = 5 + 6 + 7
    assert snap.prompt_tokens_total == sum(map(len, prompts))
    assert snap.generation_tokens_total == generated
    assert snap.request_success_total == {"stop": 0, "length": 3, "abort": 0}
    assert snap.time_to_first_token_seconds.count == 3
    assert snap.e2e_request_latency_seconds.count == 3
    assert snap.inter_token_latency_seconds.count == generated - 3
    assert snap.request_generation_tokens.sum == generated
    ttft = snap.time_to_first_token_seconds
    assert (
        ttft.cumulative_counts[-1] == ttft.count
        and len(ttft.cumulative_counts) == len(ttft.bounds) + 1
    )
    assert list(ttft.cumulative_counts) == sorted(ttft.cumulative_counts)
    assert snap.num_requests_running == 0 and snap.kv_cache_usage == 0.0


def test_stats_report_peak_slot_use(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama, num_blocks=64, block_size=4)
    engine.start()
    asyncio.run(
        collect(engine, "s", list(range(30, 50)), SamplingParams(max_tokens=10, ignore_eos=True))
    )
    stats = engine.stats()
    assert stats.peak_kv_blocks_used == 8  # 29 computed tokens at most: ceil(29 / 4)
    assert 0.9 <= stats.slot_usage_at_peak_blocks <= 1.0
    assert stats.kv_blocks_total == 64 and stats.num_steps == 10


def test_text_prompts_are_tokenized(tiny_llama: Path) -> None:
    engine = make_engine(tiny_llama)
    engine.start()
    outs = asyncio.run(collect(engine, "t", "the quick brown", SamplingParams(max_tokens=4)))
    assert outs[-1].num_prompt_tokens == len(engine.tokenizer.encode("the quick brown"))


def test_gpt2_context_cannot_exceed_its_learned_positions(tiny_gpt2: Path) -> None:
    with pytest.raises(InvalidSamplingParams) as info:
        make_engine(tiny_gpt2, max_model_len=513)
    assert info.value.field == "max_model_len"
    assert make_engine(tiny_gpt2, max_model_len=512).context_length == 512


def test_a_pool_sized_from_bytes_is_capped_at_what_sequences_can_use(tiny_llama: Path) -> None:
    engine = make_engine(
        tiny_llama, num_blocks=None, kv_cache_bytes=1 << 30, max_num_seqs=4, max_model_len=100
    )
    assert engine.num_blocks == 4 * 7  # ceil(100 / 16) blocks for each of 4 sequences
    # 2 (keys, values) x 2 layers x 16 tokens x 2 KV heads x 16 dims x 4 bytes per block.
    small = make_engine(tiny_llama, num_blocks=None, kv_cache_bytes=20 * 2 * 2 * 16 * 2 * 16 * 4)
    assert small.num_blocks == 20
    assert small.context_length == 20 * 16  # what the pool holds, below the model's 512
