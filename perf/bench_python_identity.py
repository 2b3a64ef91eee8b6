"""Trident vs real Triton on the same Python-backend identity model, measured by perf_analyzer.

The model: `model.py` returning INPUT0 as OUTPUT0, FP32[16], max_batch_size 0 (no batching), one
CPU instance, written into a temporary repository that both servers serve. perf_analyzer drives
each server over gRPC on 127.0.0.1 at concurrency 1 and 8, with 3 s measurement windows, one
server at a time (the load generator shares the machine's cores with the server).

Usage (from the repository root, with Trident's venv; run perf/install_peers.sh first):

    .venv/bin/python -m perf.bench_python_identity            # 3 s windows
    .venv/bin/python -m perf.bench_python_identity --quick    # 1 s windows, looser stability
    .venv/bin/python -m perf.bench_python_identity --rounds 3  # alternate, report medians
    .venv/bin/python -m perf.bench_python_identity --server triton --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perf import peers

MODEL = "identity"
SERVERS = ("trident", "triton")


@dataclass
class Measurement:
    """One server at one concurrency level; `note` says when the numbers are less trustworthy."""

    server: str
    concurrency: int
    round: int
    throughput: float
    p50_us: float
    p99_us: float
    cpu_us_per_infer: float | None  # server process(es) CPU time / inferences served
    note: str = ""


@dataclass(frozen=True)
class BenchSettings:
    concurrency: tuple[int, ...]
    measurement_ms: int
    max_trials: int
    stability_percentage: float
    protocol: str


def measure_level(
    process: peers.ServerProcess, server: str, level: int, round_: int, bench: BenchSettings
) -> Measurement:
    """One concurrency level. When perf_analyzer finds no stable window (a noisy 2-core machine),
    measure again accepting any three windows and say so in the note.

    Besides perf_analyzer's figures, the server's CPU time per inference: CPU seconds the
    server's processes used during the run over the inferences its statistics API counted. It
    does not depend on what else runs on the machine as much as throughput does."""
    url = process.grpc_url if bench.protocol == "grpc" else process.http_url
    cpu_before, count_before = process.cpu_seconds(), process.inference_count(MODEL)
    common = dict(
        protocol=bench.protocol,
        concurrency=(level,),
        measurement_ms=bench.measurement_ms,
    )
    note = ""
    try:
        run = peers.run_perf_analyzer(
            MODEL,
            url,
            max_trials=bench.max_trials,
            stability_percentage=bench.stability_percentage,
            **common,
        )
    except peers.PerfAnalyzerUnstableError:
        note = "unstable"
        run = peers.run_perf_analyzer(MODEL, url, max_trials=3, stability_percentage=1000, **common)
    (result,) = run.results
    served = process.inference_count(MODEL) - count_before
    cpu_us = (process.cpu_seconds() - cpu_before) * 1e6 / served if served else None
    measurement = Measurement(
        server, level, round_, result.throughput, result.p50_us, result.p99_us, cpu_us, note
    )
    print(
        f"# round {round_} {server} c={level}: {result.throughput:,.0f} infer/s, "
        f"p50 {result.p50_us / 1000:.2f} ms, p99 {result.p99_us / 1000:.2f} ms, "
        f"server CPU {_fmt_us(cpu_us)} us/infer {note}",
        file=sys.stderr,
    )
    return measurement


def bench_server(
    server: str, repository: Path, log_dir: Path, round_: int, bench: BenchSettings
) -> list[Measurement]:
    """Start one server, measure every concurrency level, stop it."""
    started = time.monotonic()
    if server == "triton":
        process = peers.start_tritonserver(repository, log_dir=log_dir / f"{server}-{round_}")
    else:
        process = peers.start_trident(
            repository, extra_args=["--exit-on-error"], log_dir=log_dir / f"{server}-{round_}"
        )
    print(
        f"# {server}: ready in {time.monotonic() - started:.1f} s (log: {process.log_path})",
        file=sys.stderr,
    )
    with process:
        return [measure_level(process, server, level, round_, bench) for level in bench.concurrency]


@dataclass(frozen=True)
class Summary:
    """One server at one level over all rounds: medians, and the range of throughput."""

    server: str
    concurrency: int
    throughput: float
    throughput_min: float
    throughput_max: float
    p50_us: float
    p99_us: float
    cpu_us_per_infer: float | None
    rounds: int
    notes: str


def _median_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def summarize(measurements: list[Measurement]) -> list[Summary]:
    """Medians per (server, level), in the order the pairs were first measured."""
    groups: dict[tuple[str, int], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.server, m.concurrency), []).append(m)
    summaries = []
    for (server, level), group in groups.items():
        rates = [m.throughput for m in group]
        notes = sorted({m.note for m in group if m.note})
        summaries.append(
            Summary(
                server=server,
                concurrency=level,
                throughput=statistics.median(rates),
                throughput_min=min(rates),
                throughput_max=max(rates),
                p50_us=statistics.median(m.p50_us for m in group),
                p99_us=statistics.median(m.p99_us for m in group),
                cpu_us_per_infer=_median_or_none(m.cpu_us_per_infer for m in group),
                rounds=len(group),
                notes=", ".join(f"{n} in {sum(m.note == n for m in group)}" for n in notes),
            )
        )
    return summaries


def format_table(summaries: list[Summary], bench: BenchSettings, rounds: int) -> str:
    """A Markdown table: infer/s, p50 and p99 per server and level, and Trident/Triton ratios."""
    median = f"median of {rounds} rounds, " if rounds > 1 else ""
    lines = [
        f"perf_analyzer over {bench.protocol}, identity FP32[16] Python backend, max_batch_size 0, "
        f"{bench.measurement_ms} ms windows, {median}one server at a time",
        "",
        "| server | concurrency | infer/s | p50 ms | p99 ms | server CPU µs/infer | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sorted(summaries, key=lambda s: (s.concurrency, s.server)):
        spread = f" ({s.throughput_min:,.0f} to {s.throughput_max:,.0f})" if s.rounds > 1 else ""
        lines.append(
            f"| {s.server} | {s.concurrency} | {s.throughput:,.0f}{spread} | "
            f"{s.p50_us / 1000:.2f} | {s.p99_us / 1000:.2f} | {_fmt_us(s.cpu_us_per_infer)} | "
            f"{s.notes} |"
        )
    by_key = {(s.server, s.concurrency): s for s in summaries}
    ratios = []
    for level in bench.concurrency:
        ours, theirs = by_key.get(("trident", level)), by_key.get(("triton", level))
        if ours and theirs:
            cpu = (
                f"{ours.cpu_us_per_infer / theirs.cpu_us_per_infer:.2f}"
                if ours.cpu_us_per_infer and theirs.cpu_us_per_infer
                else "-"
            )
            ratios.append(
                f"| {level} | {ours.throughput / theirs.throughput:.2f} | "
                f"{ours.p50_us / theirs.p50_us:.2f} | {ours.p99_us / theirs.p99_us:.2f} | {cpu} |"
            )
    if ratios:
        lines += [
            "",
            "Trident / Triton (infer/s: higher is better; latency and CPU: lower is better)",
            "",
            "| concurrency | infer/s | p50 | p99 | server CPU/infer |",
            "|---|---|---|---|---|",
            *ratios,
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s windows, looser stability")
    parser.add_argument(
        "--server",
        choices=SERVERS,
        action="append",
        help="measure only this server (repeatable; default: both, Trident first)",
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="levels (default: 1 8)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the servers in turn this many times and report medians; on a shared "
        "machine this spreads drift over both servers (default: 1)",
    )
    parser.add_argument("--json", type=Path, help="also write the measurements here as JSON")
    args = parser.parse_args(argv)

    bench = BenchSettings(
        concurrency=tuple(args.concurrency),
        measurement_ms=1000 if args.quick else 3000,
        max_trials=5 if args.quick else 10,
        stability_percentage=25 if args.quick else 10,
        protocol=args.protocol,
    )
    try:
        peers.find_perf_analyzer()
        if "triton" in (args.server or SERVERS):
            peers.find_tritonserver()
    except peers.PeerNotInstalledError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    peers.warn_if_busy()
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-identity-") as tmp:
        repository = Path(tmp) / "repository"
        peers.write_identity_model(repository, MODEL, max_batch_size=0)
        for round_ in range(1, args.rounds + 1):
            for server in args.server or SERVERS:
                measurements += bench_server(server, repository, Path(tmp) / "logs", round_, bench)
    print(format_table(summarize(measurements), bench, args.rounds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(m) for m in measurements], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
