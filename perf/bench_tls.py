"""gRPC over TLS: what it costs Trident, and Trident vs real Triton with the same certificates.

The Python-backend identity model (FP32[16], as in bench_python_identity.py), driven by
perf_analyzer over gRPC on 127.0.0.1 at concurrency 1 and 8, against each server in each mode:
plaintext, TLS (`--grpc-use-ssl`) and, with `--mutual`, mutual TLS. Certificates (a CA, a server
certificate for 127.0.0.1, a client certificate) are generated for the run with `cryptography`.
Servers run one at a time; the figures are printed with ratios measured in the same run:
Trident/Triton in each mode, and each server's TLS throughput and server CPU per inference over
its own plaintext (the CPU figure moves least when other processes share the machine).

Usage (from the repository root, with Trident's venv; run perf/install_peers.sh first):

    .venv/bin/python -m perf.bench_tls              # 2 s windows
    .venv/bin/python -m perf.bench_tls --quick      # 1 s windows, looser stability
    .venv/bin/python -m perf.bench_tls --mutual --servers trident,trident-grpcio,triton
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `perf` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perf import peers
from tests.tls_certs import TlsFiles, make_certificates

MODEL = "identity"


@dataclass(frozen=True)
class Result:
    server: str
    mode: str
    concurrency: int
    throughput: float
    p50_us: float
    #: Server CPU time (its processes, user + system) per inference served: steadier than
    #: throughput on a shared machine.
    cpu_us: float | None
    note: str


def _server_flags(mode: str, certs: TlsFiles) -> list[str]:
    if mode == "plaintext":
        return []
    flags = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={certs.server_cert}",
        f"--grpc-server-key={certs.server_key}",
    ]
    if mode == "mutual":
        flags += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={certs.ca_cert}"]
    return flags


def _client_flags(mode: str, certs: TlsFiles) -> list[str]:
    if mode == "plaintext":
        return []
    flags = ["--ssl-grpc-use-ssl", f"--ssl-grpc-root-certifications-file={certs.ca_cert}"]
    if mode == "mutual":
        flags += [
            f"--ssl-grpc-private-key-file={certs.client_key}",
            f"--ssl-grpc-certificate-chain-file={certs.client_cert}",
        ]
    return flags


def _start(server: str, repository: Path, flags: list[str], log_dir: Path) -> peers.ServerProcess:
    if server == "triton":
        return peers.start_tritonserver(repository, extra_args=flags, log_dir=log_dir)
    if server == "trident-grpcio":
        flags = [*flags, "--grpc-implementation=grpcio"]
    return peers.start_trident(repository, extra_args=flags, log_dir=log_dir)


def measure(
    server: str,
    mode: str,
    repository: Path,
    certs: TlsFiles,
    log_dir: Path,
    levels: tuple[int, ...],
    window_ms: int,
    stability: float,
) -> list[Result]:
    """Start `server` in `mode`, measure every level, stop it."""
    results = []
    with _start(server, repository, _server_flags(mode, certs), log_dir / f"{server}-{mode}") as p:
        for level in levels:
            common = dict(
                concurrency=(level,),
                measurement_ms=window_ms,
                extra_args=_client_flags(mode, certs),
            )
            note = ""
            cpu_before, count_before = p.cpu_seconds(), p.inference_count(MODEL)
            try:
                run = peers.run_perf_analyzer(
                    MODEL, p.grpc_url, stability_percentage=stability, **common
                )
            except peers.PerfAnalyzerUnstableError:
                note = "unstable"
                run = peers.run_perf_analyzer(
                    MODEL, p.grpc_url, max_trials=3, stability_percentage=1000, **common
                )
            (result,) = run.results
            served = p.inference_count(MODEL) - count_before
            cpu_us = (p.cpu_seconds() - cpu_before) * 1e6 / served if served else None
            results.append(
                Result(server, mode, level, result.throughput, result.p50_us, cpu_us, note)
            )
            print(
                f"# {server} {mode} c={level}: {result.throughput:,.0f} infer/s, "
                f"p50 {result.p50_us / 1000:.2f} ms, server CPU {cpu_us or 0:.0f} us/infer {note}",
                file=sys.stderr,
            )
    return results


def report(results: list[Result], servers: list[str], modes: list[str]) -> None:
    by_key = {(r.server, r.mode, r.concurrency): r for r in results}
    levels = sorted({r.concurrency for r in results})
    print(
        f"{'server':16} {'mode':10} {'c':>3} {'infer/s':>10} {'p50 ms':>8} {'vs plain':>9} "
        f"{'CPU us/inf':>10} {'vs plain':>9}"
    )
    for server in servers:
        for mode in modes:
            for level in levels:
                r = by_key[(server, mode, level)]
                plain = by_key[(server, "plaintext", level)]
                cpu = f"{r.cpu_us:>10.0f}" if r.cpu_us else f"{'-':>10}"
                cpu_ratio = (
                    f"{r.cpu_us / plain.cpu_us:>9.2f}" if r.cpu_us and plain.cpu_us else f"{'-':>9}"
                )
                print(
                    f"{server:16} {mode:10} {level:>3} {r.throughput:>10,.0f} "
                    f"{r.p50_us / 1000:>8.2f} {r.throughput / plain.throughput:>9.2f} "
                    f"{cpu} {cpu_ratio} {r.note}"
                )
    if "triton" in servers:
        print("\nTrident / Triton, same mode, same run (throughput; server CPU per inference):")
        for server in (s for s in servers if s != "triton"):
            for mode in modes:
                parts = []
                for level in levels:
                    ours, theirs = by_key[(server, mode, level)], by_key[("triton", mode, level)]
                    cpu = (
                        f"{ours.cpu_us / theirs.cpu_us:.2f}"
                        if ours.cpu_us and theirs.cpu_us
                        else "-"
                    )
                    parts.append(f"c={level}: {ours.throughput / theirs.throughput:.2f}; {cpu}")
                print(f"  {server} {mode}: " + ", ".join(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="trident,triton")
    parser.add_argument("--mutual", action="store_true", help="also measure mutual TLS")
    parser.add_argument("--quick", action="store_true", help="1 s windows, looser stability")
    parser.add_argument("--concurrency", default="1,8")
    args = parser.parse_args(argv)
    servers = args.servers.split(",")
    modes = ["plaintext", "tls"] + (["mutual"] if args.mutual else [])
    levels = tuple(int(level) for level in args.concurrency.split(","))
    window_ms, stability = (1000, 25.0) if args.quick else (2000, 10.0)
    peers.warn_if_busy()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        folder = Path(tmp)
        certs = make_certificates(folder / "certs")
        repository = folder / "repo"
        peers.write_identity_model(repository)
        for server in servers:
            for mode in modes:
                results += measure(
                    server, mode, repository, certs, folder / "logs", levels, window_ms, stability
                )
    report(results, servers, modes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
