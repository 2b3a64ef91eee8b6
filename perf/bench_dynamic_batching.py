"""Dynamic batching, measured by perf_analyzer over gRPC on a Python-backend numpy MLP.

The model: FP32[256] -> 1024 (ReLU) -> 256, fixed random weights (seeded), max_batch_size 64,
one CPU instance. Its `execute` concatenates the requests it gets and runs one matrix product
per layer, so batching pays off. Two copies in one temporary repository that both servers serve:
`mlp_batched` with `dynamic_batching { max_queue_delay_microseconds: 500 }` and `mlp_unbatched`
without dynamic batching.

Both servers run with one BLAS thread (OPENBLAS_NUM_THREADS=1 and friends, set here for the
server processes): on a small machine shared with the load generator, OpenBLAS's own threads
fight the server's and make mid-size products 10-50x slower, which would measure the BLAS
library rather than the batcher.

What it reports (one server at a time; perf_analyzer shares the machine's cores with it):

  (a) concurrency 16, mlp_batched: Trident vs real Triton       goal: infer/s ratio >= 1
  (b) concurrency 16: Trident mlp_batched vs mlp_unbatched       goal: infer/s ratio >= 1.5
  (c) concurrency 1, Trident: p50 batched <= p50 unbatched + 500 us (the batcher costs at most
      its configured delay when there is nothing to batch). Latency at concurrency 1 swings
      with whatever else runs on the machine, so the two models are measured alternately
      `--c1-rounds` times and the medians compared.

Usage (repository root, Trident's venv; perf/install_peers.sh first):

    .venv/bin/python -m perf.bench_dynamic_batching
    .venv/bin/python -m perf.bench_dynamic_batching --quick --json out.json
    .venv/bin/python -m perf.bench_dynamic_batching --skip-triton
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perf import peers

DELAY_US = 500
MAX_BATCH_SIZE = 64
#: Environment of both servers (and so of the models' numpy).
SINGLE_THREADED_BLAS = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

MLP_PY = '''\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """FP32[256] -> 1024 (ReLU) -> 256 with fixed random weights; one product per layer."""

    def initialize(self, args):
        rng = np.random.default_rng(2024)
        self.w1 = (rng.standard_normal((256, 1024)) / 16).astype(np.float32)
        self.b1 = (rng.standard_normal(1024) / 16).astype(np.float32)
        self.w2 = (rng.standard_normal((1024, 256)) / 32).astype(np.float32)
        self.b2 = (rng.standard_normal(256) / 32).astype(np.float32)

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        batch = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)
        hidden = np.maximum(batch @ self.w1 + self.b1, 0.0)
        outputs = hidden @ self.w2 + self.b2
        responses = []
        start = 0
        for array in inputs:
            rows = array.shape[0]
            output = pb_utils.Tensor("OUTPUT0", outputs[start : start + rows])
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            start += rows
        return responses
'''


def mlp_config(name: str, batching: str) -> str:
    return textwrap.dedent(f"""\
        name: "{name}"
        backend: "python"
        max_batch_size: {MAX_BATCH_SIZE}
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 256 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 256 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        {batching}
        """)


MODELS = {
    "mlp_batched": f"dynamic_batching {{ max_queue_delay_microseconds: {DELAY_US} }}",
    "mlp_unbatched": "",
}


def write_repository(repository: Path) -> None:
    for name, batching in MODELS.items():
        (repository / name / "1").mkdir(parents=True, exist_ok=True)
        (repository / name / "config.pbtxt").write_text(mlp_config(name, batching))
        (repository / name / "1" / "model.py").write_text(MLP_PY)


@dataclass
class Measurement:
    server: str
    model: str
    concurrency: int
    throughput: float
    p50_us: float
    p99_us: float
    note: str = ""
    #: The statistics API's average from a request's arrival to its response, over the run.
    server_success_us: float | None = None


@dataclass(frozen=True)
class BenchSettings:
    measurement_ms: int
    max_trials: int
    stability_percentage: float


def _success_totals(process: peers.ServerProcess, model: str) -> tuple[int, int]:
    """(count, ns) of the model's successful requests so far, from the statistics API."""
    url = f"http://{process.http_url}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats = json.load(response)["model_stats"]
    count = sum(int(s["inference_stats"]["success"]["count"]) for s in stats)
    ns = sum(int(s["inference_stats"]["success"]["ns"]) for s in stats)
    return count, ns


def measure(
    process: peers.ServerProcess, server: str, model: str, level: int, bench: BenchSettings
) -> Measurement:
    """One model at one concurrency level; an unstable run is measured again accepting any
    three windows, and says so in `note`."""
    url = process.grpc_url
    before = _success_totals(process, model)
    common = dict(protocol="grpc", concurrency=(level,), measurement_ms=bench.measurement_ms)
    note = ""
    try:
        run = peers.run_perf_analyzer(
            model,
            url,
            max_trials=bench.max_trials,
            stability_percentage=bench.stability_percentage,
            **common,
        )
    except peers.PerfAnalyzerUnstableError:
        note = "unstable"
        run = peers.run_perf_analyzer(model, url, max_trials=3, stability_percentage=1000, **common)
    (result,) = run.results
    after = _success_totals(process, model)
    count = after[0] - before[0]
    success_us = (after[1] - before[1]) / count / 1000 if count else None
    measurement = Measurement(
        server, model, level, result.throughput, result.p50_us, result.p99_us, note, success_us
    )
    print(
        f"# {server} {model} c={level}: {result.throughput:,.0f} infer/s, "
        f"p50 {result.p50_us:,.0f} us, p99 {result.p99_us:,.0f} us {note}",
        file=sys.stderr,
    )
    return measurement


def bench_server(
    server: str,
    repository: Path,
    log_dir: Path,
    plan: list[tuple[str, int]],
    bench: BenchSettings,
) -> list[Measurement]:
    started = time.monotonic()
    if server == "triton":
        process = peers.start_tritonserver(repository, log_dir=log_dir / server)
    else:
        process = peers.start_trident(
            repository, extra_args=["--exit-on-error"], log_dir=log_dir / server
        )
    print(f"# {server}: ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    with process:
        return [measure(process, server, model, level, bench) for model, level in plan]


def _find(
    measurements: list[Measurement], server: str, model: str, level: int
) -> Measurement | None:
    """The measurement of (server, model, level); the medians when it was measured repeatedly."""
    found = [
        m for m in measurements if (m.server, m.model, m.concurrency) == (server, model, level)
    ]
    if len(found) <= 1:
        return found[0] if found else None
    return Measurement(
        server,
        model,
        level,
        statistics.median(m.throughput for m in found),
        statistics.median(m.p50_us for m in found),
        statistics.median(m.p99_us for m in found),
        f"median of {len(found)}",
    )


def _select_all(measurements: list[Measurement], server: str, level: int) -> list[Measurement]:
    return [m for m in measurements if m.server == server and m.concurrency == level]


def report(measurements: list[Measurement], bench: BenchSettings) -> tuple[str, bool]:
    """A Markdown table and the three checks; returns (text, all goals met)."""
    lines = [
        f"perf_analyzer over gRPC, Python-backend numpy MLP FP32[256]->1024->256, "
        f"max_batch_size {MAX_BATCH_SIZE}, 1 instance, {bench.measurement_ms} ms windows",
        "",
        "| server | model | concurrency | infer/s | p50 us | p99 us | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in measurements:
        lines.append(
            f"| {m.server} | {m.model} | {m.concurrency} | {m.throughput:,.0f} | "
            f"{m.p50_us:,.0f} | {m.p99_us:,.0f} | {m.note} |"
        )
    lines.append("")
    ok = True
    ours = _find(measurements, "trident", "mlp_batched", 16)
    theirs = _find(measurements, "triton", "mlp_batched", 16)
    if ours and theirs:
        ratio = ours.throughput / theirs.throughput
        ok &= ratio >= 1.0
        lines.append(
            f"(a) c=16 Trident/Triton, batched: infer/s x{ratio:.2f} (goal >= 1.00); "
            f"p50 {ours.p50_us:,.0f} vs {theirs.p50_us:,.0f} us, "
            f"p99 {ours.p99_us:,.0f} vs {theirs.p99_us:,.0f} us"
        )
    unbatched = _find(measurements, "trident", "mlp_unbatched", 16)
    if ours and unbatched:
        ratio = ours.throughput / unbatched.throughput
        ok &= ratio >= 1.5
        lines.append(
            f"(b) c=16 Trident batched/unbatched: infer/s x{ratio:.2f} (goal >= 1.50); "
            f"p50 {ours.p50_us:,.0f} vs {unbatched.p50_us:,.0f} us, "
            f"p99 {ours.p99_us:,.0f} vs {unbatched.p99_us:,.0f} us"
        )
    alone = _find(measurements, "trident", "mlp_batched", 1)
    alone_unbatched = _find(measurements, "trident", "mlp_unbatched", 1)
    if alone and alone_unbatched:
        extra = alone.p50_us - alone_unbatched.p50_us
        ok &= extra <= DELAY_US
        lines.append(
            f"(c) c=1 Trident p50 batched {alone.p50_us:,.0f} us vs unbatched "
            f"{alone_unbatched.p50_us:,.0f} us ({alone.note or 'one run'}): "
            f"+{extra:,.0f} us (goal <= +{DELAY_US}); "
            f"p99 {alone.p99_us:,.0f} vs {alone_unbatched.p99_us:,.0f} us"
        )
        singles = _select_all(measurements, "trident", 1)
        batched = [m.server_success_us for m in singles if m.model == "mlp_batched"]
        unbatched = [m.server_success_us for m in singles if m.model == "mlp_unbatched"]
        inside_batched = statistics.median([v for v in batched if v is not None] or [0.0])
        inside_unbatched = statistics.median([v for v in unbatched if v is not None] or [0.0])
        if inside_batched and inside_unbatched:
            lines.append(
                "    inside the server (statistics API, average from arrival to response): "
                f"batched {inside_batched:,.0f} us vs unbatched {inside_unbatched:,.0f} us: "
                f"+{inside_batched - inside_unbatched:,.0f} us"
            )
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s windows, looser stability")
    parser.add_argument("--skip-triton", action="store_true", help="measure Trident only")
    parser.add_argument(
        "--c1-rounds", type=int, default=3, help="alternate measurements at concurrency 1"
    )
    parser.add_argument("--json", type=Path, help="also write the measurements here as JSON")
    args = parser.parse_args(argv)
    bench = BenchSettings(
        measurement_ms=2000 if args.quick else 4000,
        max_trials=5 if args.quick else 10,
        stability_percentage=25 if args.quick else 15,
    )
    try:
        peers.find_perf_analyzer()
        if not args.skip_triton:
            peers.find_tritonserver()
    except peers.PeerNotInstalledError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    os.environ.update(SINGLE_THREADED_BLAS)  # the servers inherit it
    trident_plan = [("mlp_batched", 16), ("mlp_unbatched", 16)]
    trident_plan += [("mlp_unbatched", 1), ("mlp_batched", 1)] * max(1, args.c1_rounds)
    triton_plan = [("mlp_batched", 16), ("mlp_batched", 1)]
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        repository = Path(tmp) / "repository"
        write_repository(repository)
        measurements += bench_server("trident", repository, Path(tmp) / "logs", trident_plan, bench)
        if not args.skip_triton:
            measurements += bench_server(
                "triton", repository, Path(tmp) / "logs", triton_plan, bench
            )
    text, ok = report(measurements, bench)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(m) for m in measurements], indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
