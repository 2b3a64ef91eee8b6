"""What process isolation costs a Python model: in-process vs isolated Trident vs Triton.

The identity model of bench_python_identity (FP32[16], max_batch_size 0, one CPU instance),
served three ways, one server at a time, driven by perf_analyzer over gRPC on 127.0.0.1 at
concurrency 1 and 8:

- `trident`: the model runs in the server process (the default);
- `trident-isolated`: `--python-isolation process`, the model runs in a child process and each
  execute is one round trip over a socket, tensors through shared memory;
- `triton`: Triton's Python backend, which always runs models in a stub process.

The goal: isolated Trident still beats Triton. Server CPU per inference counts the server's
whole process tree (the model processes too).

Usage (from the repository root, with Trident's venv; run perf/install_peers.sh first):

    .venv/bin/python -m perf.bench_python_isolation            # 3 s windows
    .venv/bin/python -m perf.bench_python_isolation --quick    # 1 s windows
    .venv/bin/python -m perf.bench_python_isolation --rounds 3 # alternate, report medians
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perf import peers
from perf.bench_python_identity import (
    MODEL,
    BenchSettings,
    Measurement,
    Summary,
    _fmt_us,
    measure_level,
    summarize,
)

SERVERS = ("trident", "trident-isolated", "triton")


def start(server: str, repository: Path, log_dir: Path) -> peers.ServerProcess:
    if server == "triton":
        return peers.start_tritonserver(repository, log_dir=log_dir)
    extra = ["--exit-on-error"]
    if server == "trident-isolated":
        extra += ["--python-isolation", "process"]
    return peers.start_trident(repository, extra_args=extra, log_dir=log_dir)


def bench_server(
    server: str, repository: Path, log_dir: Path, round_: int, bench: BenchSettings
) -> list[Measurement]:
    started = time.monotonic()
    process = start(server, repository, log_dir / f"{server}-{round_}")
    print(f"# {server}: ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    measurements = []
    with process:
        for level in bench.concurrency:
            try:
                measurements.append(measure_level(process, server, level, round_, bench))
            except peers.PerfAnalyzerError as exc:  # a noisy machine: report the others
                print(f"# {server} c={level}: no measurement ({exc})"[:300], file=sys.stderr)
    return measurements


def format_table(summaries: list[Summary], bench: BenchSettings, rounds: int) -> str:
    """A Markdown table per server and level, then ratios against Triton and in-process."""
    median = f"median of {rounds} rounds, " if rounds > 1 else ""
    lines = [
        f"perf_analyzer over {bench.protocol}, identity FP32[16] Python model, "
        f"{bench.measurement_ms} ms windows, {median}one server at a time",
        "",
        "| server | concurrency | infer/s | p50 ms | p99 ms | server CPU µs/infer | note |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {name: index for index, name in enumerate(SERVERS)}
    for s in sorted(summaries, key=lambda s: (s.concurrency, order.get(s.server, 9))):
        spread = f" ({s.throughput_min:,.0f} to {s.throughput_max:,.0f})" if s.rounds > 1 else ""
        lines.append(
            f"| {s.server} | {s.concurrency} | {s.throughput:,.0f}{spread} | "
            f"{s.p50_us / 1000:.2f} | {s.p99_us / 1000:.2f} | {_fmt_us(s.cpu_us_per_infer)} | "
            f"{s.notes} |"
        )
    by_key = {(s.server, s.concurrency): s for s in summaries}
    ratios = []
    for level in bench.concurrency:
        isolated = by_key.get(("trident-isolated", level))
        if isolated is None:
            continue
        for peer in ("triton", "trident"):
            other = by_key.get((peer, level))
            if other is not None:
                ratios.append(
                    f"| {level} | trident-isolated / {peer} | "
                    f"{isolated.throughput / other.throughput:.2f} | "
                    f"{isolated.p50_us / other.p50_us:.2f} | {isolated.p99_us / other.p99_us:.2f} |"
                )
    if ratios:
        lines += [
            "",
            "Ratios (infer/s: higher is better; latency: lower is better)",
            "",
            "| concurrency | pair | infer/s | p50 | p99 |",
            "|---|---|---|---|---|",
            *ratios,
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s windows, looser stability")
    parser.add_argument(
        "--server", choices=SERVERS, action="append", help="only this server (repeatable)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=1, help="alternate servers, report medians")
    parser.add_argument("--json", type=Path, help="also write the measurements here as JSON")
    args = parser.parse_args(argv)
    bench = BenchSettings(
        concurrency=tuple(args.concurrency),
        measurement_ms=1000 if args.quick else 3000,
        max_trials=5 if args.quick else 10,
        stability_percentage=25 if args.quick else 10,
        protocol="grpc",
    )
    servers = args.server or list(SERVERS)
    try:
        peers.find_perf_analyzer()
        if "triton" in servers:
            peers.find_tritonserver()
    except peers.PeerNotInstalledError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    peers.warn_if_busy()
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
        repository = Path(tmp) / "repository"
        peers.write_identity_model(repository, MODEL, max_batch_size=0)
        for round_ in range(1, args.rounds + 1):
            for server in servers:
                measurements += bench_server(server, repository, Path(tmp) / "logs", round_, bench)
    print(format_table(summarize(measurements), bench, args.rounds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(m) for m in measurements], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
