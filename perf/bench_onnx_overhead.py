"""What Trident adds to an ONNX Runtime model, and Trident vs real Triton on the same model.

The model: an MLP FP32[256] -> 1024 (ReLU) -> 256, built here with the onnx helper API from fixed
seeded weights (`model.onnx`, opset 17), `max_batch_size: 8` without dynamic batching, one CPU
instance, ONNX Runtime with one intra-op thread everywhere (`--intra-op-threads`; on a small
machine shared with the load generator, a thread pool's spinning costs more than it gives a
batch-1 product). Three ways to run it:

- in-process: an `ort.InferenceSession` in this script, `session.run` timed call by call;
- Trident: `trident serve` with the model on its onnxruntime backend;
- Triton: the real tritonserver running the same file through its Python backend, a `model.py`
  that creates an `ort.InferenceSession` in `initialize` and runs it in `execute` (pytriton's
  tritonserver has no onnxruntime backend; `perf/install_peers.sh --with-onnxruntime` installs
  onnxruntime into its venv).

perf_analyzer drives each server over gRPC on 127.0.0.1 at batch 1, concurrency 1 (and
`--concurrency` more levels, 4 by default), one server at a time. Each round measures the
in-process p50 and then both servers, in alternating order; the table gives medians over rounds:

  (1) Trident's p50 minus the in-process p50: what Trident adds per request   goal: < 150 us
      and where it goes, from the statistics API (average queue / compute input / compute infer
      / compute output per request, the rest being the frontend, the wire and the client).
      perf_analyzer's p50 includes its own client and the kernel's TCP path, which any server
      pays (Triton's overhead is given next to Trident's), so each round also times Trident in
      this process with a minimal client over loopback TCP (perf/in_server_latency.py), and
      that client against an echo server: the probe's own floor;
  (2) Trident's infer/s over Triton's at concurrency 1                         goal: > 1

The in-process p50 the goal uses is taken back to back, the weights (2 MB) warm in the caches.
Each round also times it with `--pause-us` (1 ms) between calls, about the gap a server sees
between requests at concurrency 1: on a shared machine the weights leave the caches in that gap
and the same call takes 2-3x as long, in any server as in this script; the table gives the
overhead against both. A level that perf_analyzer cannot stabilise is measured again accepting
any three windows and marked `unstable`. Before measuring, one request to each server is checked
against the in-process output. Exit status: 0 when both goals are met, 1 when not, 2 when a peer
is not installed.

Usage (repository root, Trident's venv; `perf/install_peers.sh --with-onnxruntime` first):

    .venv/bin/python -m perf.bench_onnx_overhead                 # 3 rounds, 2 s windows
    .venv/bin/python -m perf.bench_onnx_overhead --rounds 5 --json perf/results/onnx.json
    .venv/bin/python -m perf.bench_onnx_overhead --protocol http --concurrency 1
    .venv/bin/python -m perf.bench_onnx_overhead --server trident --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perf import peers
from perf.in_server_latency import measure_echo_floor, measure_in_server
from trident.runtime.protocol import grpc_service_pb2 as gs

MODEL = "mlp_onnx"
SERVERS = ("trident", "triton")
IN, HIDDEN, OUT = 256, 1024, 256
MAX_BATCH_SIZE = 8
SEED = 2024
#: The goals this benchmark checks.
GOAL_OVERHEAD_US = 150.0
GOAL_THROUGHPUT_RATIO = 1.0
#: Statistics API durations split per request (Triton's names).
STAT_KEYS = ("success", "queue", "compute_input", "compute_infer", "compute_output")
#: perf_analyzer's CSV columns that add up to its average latency (µs).
LATENCY_PARTS = (
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
)


# --------------------------------------------------------------------------------------------
# the model


def mlp_weights() -> dict[str, np.ndarray]:
    """The MLP's fixed weights, the same on every run."""
    rng = np.random.default_rng(SEED)
    return {
        "W1": (rng.standard_normal((IN, HIDDEN)) / 16).astype(np.float32),
        "B1": (rng.standard_normal(HIDDEN) / 16).astype(np.float32),
        "W2": (rng.standard_normal((HIDDEN, OUT)) / 32).astype(np.float32),
        "B2": (rng.standard_normal(OUT) / 32).astype(np.float32),
    }


def build_mlp_onnx() -> bytes:
    """model.onnx: INPUT0 [batch, 256] -> MatMul, Add, Relu, MatMul, Add -> OUTPUT0 [batch, 256]."""
    nodes = [
        helper.make_node("MatMul", ["INPUT0", "W1"], ["hidden_mm"]),
        helper.make_node("Add", ["hidden_mm", "B1"], ["hidden_pre"]),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "W2"], ["output_mm"]),
        helper.make_node("Add", ["output_mm", "B2"], ["OUTPUT0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", IN])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", OUT])],
        [numpy_helper.from_array(array, name) for name, array in mlp_weights().items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="trident-perf"
    )
    model.ir_version = 8  # readable by any onnxruntime >= 1.10, whichever venv loads it
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _config(backend_lines: str, intra_op_threads: int) -> str:
    return textwrap.dedent(f"""\
        name: "{MODEL}"
        {backend_lines}
        max_batch_size: {MAX_BATCH_SIZE}
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {IN} ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {OUT} ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        parameters {{ key: "intra_op_thread_count" value {{ string_value: "{intra_op_threads}" }} }}
        parameters {{ key: "inter_op_thread_count" value {{ string_value: "1" }} }}
        """)


#: Triton's Python backend running the ONNX file with onnxruntime, options from the config's
#: parameters (the keys Triton's onnxruntime backend reads, which Trident's reads too).
TRITON_ORT_MODEL_PY = '''\
import json
import os

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """model.onnx beside this file, run by one ort.InferenceSession on the CPU."""

    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        options = ort.SessionOptions()
        for key, attribute in (
            ("intra_op_thread_count", "intra_op_num_threads"),
            ("inter_op_thread_count", "inter_op_num_threads"),
        ):
            value = int(parameters.get(key, {}).get("string_value", "0"))
            if value:
                setattr(options, attribute, value)
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            (output,) = self.session.run(["OUTPUT0"], {"INPUT0": data})
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", output)])
            )
        return responses

    def finalize(self):
        self.session = None
'''


def write_repositories(root: Path, onnx_bytes: bytes, intra_op_threads: int) -> dict[str, Path]:
    """One repository per server, the same model.onnx in both; returns them by server name."""
    trident = root / "trident-repository" / MODEL
    (trident / "1").mkdir(parents=True)
    (trident / "1" / "model.onnx").write_bytes(onnx_bytes)
    (trident / "config.pbtxt").write_text(_config('backend: "onnxruntime"', intra_op_threads))
    triton = root / "triton-repository" / MODEL
    (triton / "1").mkdir(parents=True)
    (triton / "1" / "model.onnx").write_bytes(onnx_bytes)
    (triton / "1" / "model.py").write_text(TRITON_ORT_MODEL_PY)
    (triton / "config.pbtxt").write_text(_config('backend: "python"', intra_op_threads))
    return {"trident": trident.parent, "triton": triton.parent}


# --------------------------------------------------------------------------------------------
# in-process reference


@dataclass(frozen=True)
class InProcess:
    """`session.run` timed call by call in this process, in microseconds: back to back (the
    weights stay in the CPU caches), and paced, with a pause between calls like the gap between
    a server's requests at concurrency 1 (the weights may have left the caches by then)."""

    round: int
    runs: int
    p50_us: float
    p99_us: float
    mean_us: float
    pause_us: int
    paced_runs: int
    paced_p50_us: float
    paced_mean_us: float


@dataclass
class InServer:
    """perf/in_server_latency.py: Trident in this process, one call at a time over loopback
    TCP from a minimal client (no perf_analyzer), and that client against an echo server."""

    round: int
    calls: int
    p50_us: float
    echo_p50_us: float


def measure_in_server_round(repository: Path, round_: int, calls: int) -> InServer:
    request = gs.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, IN])
    request.raw_input_contents.append(sample_input().tobytes())
    durations = measure_in_server(repository, request, calls)
    response_size = 64 + OUT * 4  # about the response's frames
    echo = measure_echo_floor(response_size, calls)
    result = InServer(round_, calls, _p(durations, 0.5), _p(echo, 0.5))
    print(
        f"# round {round_} in-server: p50 {result.p50_us:.1f} us; echo floor p50 "
        f"{result.echo_p50_us:.1f} us ({calls:,} calls)",
        file=sys.stderr,
    )
    return result


def make_session(onnx_bytes: bytes, intra_op_threads: int) -> ort.InferenceSession:
    """The in-process session, with the options the servers' configs ask for."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


def sample_input() -> np.ndarray:
    return np.random.default_rng(SEED + 1).standard_normal((1, IN)).astype(np.float32)


def _time_runs(session: ort.InferenceSession, seconds: float, pause_s: float = 0.0) -> list[int]:
    """Durations of `session.run` calls (ns, sorted) over about `seconds`."""
    data = {"INPUT0": sample_input()}
    names = ["OUTPUT0"]
    clock = time.perf_counter_ns
    durations: list[int] = []
    deadline = clock() + int(seconds * 1e9)
    while clock() < deadline:
        for _ in range(20):
            if pause_s:
                time.sleep(pause_s)
            start = clock()
            session.run(names, data)
            durations.append(clock() - start)
    durations.sort()
    return durations


def _p(durations: list[int], fraction: float) -> float:
    return durations[min(len(durations) - 1, int(len(durations) * fraction))] / 1000


def measure_in_process(
    session: ort.InferenceSession, round_: int, seconds: float, pause_us: int
) -> InProcess:
    """Time `session.run` at batch 1, back to back for about `seconds` after a short warm-up,
    then with `pause_us` between calls for about as long."""
    _time_runs(session, 0.2)
    hot = _time_runs(session, seconds)
    paced = _time_runs(session, seconds, pause_us / 1e6) if pause_us else [0]
    result = InProcess(
        round=round_,
        runs=len(hot),
        p50_us=_p(hot, 0.5),
        p99_us=_p(hot, 0.99),
        mean_us=sum(hot) / len(hot) / 1000,
        pause_us=pause_us,
        paced_runs=len(paced),
        paced_p50_us=_p(paced, 0.5),
        paced_mean_us=sum(paced) / len(paced) / 1000,
    )
    print(
        f"# round {round_} in-process: back to back p50 {result.p50_us:.1f} us, "
        f"p99 {result.p99_us:.1f} us, mean {result.mean_us:.1f} us ({result.runs:,} runs); "
        f"{pause_us} us apart p50 {result.paced_p50_us:.1f} us, "
        f"mean {result.paced_mean_us:.1f} us ({result.paced_runs:,} runs)",
        file=sys.stderr,
    )
    return result


# --------------------------------------------------------------------------------------------
# servers


def read_stats(process: peers.ServerProcess) -> dict[str, tuple[int, int]]:
    """(count, ns) per statistics key, summed over the model's versions."""
    url = f"http://{process.http_url}/v2/models/{MODEL}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats = json.load(response)
    totals = dict.fromkeys(STAT_KEYS, (0, 0))
    for entry in stats["model_stats"]:
        inference = entry.get("inference_stats", {})
        for key in STAT_KEYS:
            count, ns = totals[key]
            item = inference.get(key, {})
            totals[key] = (count + int(item.get("count", 0)), ns + int(item.get("ns", 0)))
    return totals


def check_outputs(process: peers.ServerProcess, expected: np.ndarray) -> None:
    """One request over HTTP; the output must match the in-process session's."""
    data = sample_input()
    body = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": list(data.shape),
                "datatype": "FP32",
                "data": data.ravel().tolist(),
            }
        ]
    }
    request = urllib.request.Request(
        f"http://{process.http_url}/v2/models/{MODEL}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        (output,) = json.load(response)["outputs"]
    got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"{process.name} returned a different output than in-process ORT")


@dataclass
class Measurement:
    """One server at one concurrency level in one round. Latencies in microseconds; `server_us`
    holds the statistics API's average per request for each of STAT_KEYS."""

    server: str
    protocol: str
    concurrency: int
    round: int
    throughput: float
    p50_us: float
    p99_us: float
    avg_us: float
    cpu_us_per_infer: float | None
    server_us: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class BenchSettings:
    protocol: str
    concurrency: tuple[int, ...]
    measurement_ms: int
    max_trials: int
    stability_percentage: float


def measure_level(
    process: peers.ServerProcess, server: str, level: int, round_: int, bench: BenchSettings
) -> Measurement:
    """One perf_analyzer run; an unstable one is measured again accepting any three windows,
    and says so in `note`."""
    url = process.grpc_url if bench.protocol == "grpc" else process.http_url
    stats_before, cpu_before = read_stats(process), process.cpu_seconds()
    common = dict(
        protocol=bench.protocol, concurrency=(level,), measurement_ms=bench.measurement_ms
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
    cpu_seconds = process.cpu_seconds() - cpu_before
    stats_after = read_stats(process)
    (result,) = run.results
    served = stats_after["success"][0] - stats_before["success"][0]
    server_us = {}
    for key in STAT_KEYS:
        ns = stats_after[key][1] - stats_before[key][1]
        server_us[key] = ns / served / 1000 if served else 0.0
    measurement = Measurement(
        server=server,
        protocol=bench.protocol,
        concurrency=level,
        round=round_,
        throughput=result.throughput,
        p50_us=result.p50_us,
        p99_us=result.p99_us,
        avg_us=_average_latency_us(result.row),
        cpu_us_per_infer=cpu_seconds * 1e6 / served if served else None,
        server_us=server_us,
        note=note,
    )
    print(
        f"# round {round_} {server} c={level}: {result.throughput:,.0f} infer/s, "
        f"p50 {result.p50_us:,.0f} us, p99 {result.p99_us:,.0f} us, server "
        + ", ".join(f"{key} {value:.1f}" for key, value in server_us.items())
        + f" us/req, CPU {_fmt(measurement.cpu_us_per_infer)} us/infer {note}",
        file=sys.stderr,
    )
    return measurement


def _average_latency_us(row: dict[str, str]) -> float:
    """perf_analyzer's average latency: its CSV has no column for it, but the parts it splits
    the average into add up to it."""
    return sum(float(row.get(column) or 0) for column in LATENCY_PARTS)


def bench_server(
    server: str,
    repository: Path,
    log_dir: Path,
    round_: int,
    bench: BenchSettings,
    expected: np.ndarray,
) -> list[Measurement]:
    """Start one server, check its output, measure every level, stop it."""
    started = time.monotonic()
    log_dir = log_dir / f"{server}-{round_}"
    if server == "triton":
        process = peers.start_tritonserver(repository, log_dir=log_dir)
    else:
        process = peers.start_trident(repository, extra_args=["--exit-on-error"], log_dir=log_dir)
    print(f"# {server}: ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    with process:
        check_outputs(process, expected)
        return [measure_level(process, server, level, round_, bench) for level in bench.concurrency]


# --------------------------------------------------------------------------------------------
# report


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _select(measurements: list[Measurement], server: str, level: int) -> list[Measurement]:
    return [m for m in measurements if m.server == server and m.concurrency == level]


def _overheads(
    in_process: list[InProcess], group: list[Measurement], paced: bool = False
) -> list[float]:
    """Per round: the server's p50 minus that round's in-process p50."""
    by_round = {p.round: p for p in in_process}
    return [
        m.p50_us - (by_round[m.round].paced_p50_us if paced else by_round[m.round].p50_us)
        for m in group
        if m.round in by_round
    ]


def report(
    in_process: list[InProcess],
    measurements: list[Measurement],
    bench: BenchSettings,
    in_server: list[InServer] | None = None,
) -> tuple[str, bool]:
    """Markdown tables and the goal checks; returns (text, every goal measured and met)."""
    rounds = max([m.round for m in measurements] + [p.round for p in in_process] + [0])
    pause = in_process[0].pause_us if in_process else 0
    hot_p50 = _median([p.p50_us for p in in_process]) if in_process else None
    paced_p50 = _median([p.paced_p50_us for p in in_process]) if in_process and pause else None
    apart = f" / {pause} µs apart" if pause else ""
    lines = [
        f"MLP FP32[{IN}]->{HIDDEN}->{OUT} on ONNX Runtime, batch 1, perf_analyzer over "
        f"{bench.protocol}, {bench.measurement_ms} ms windows, medians of {rounds} round(s)",
        "",
        f"| concurrency | in-process p50 µs (back to back{apart}) | Trident p50 µs "
        f"| Trident overhead µs (vs back to back{' / vs apart' if pause else ''}) "
        "| Trident infer/s | Triton infer/s "
        "| Trident / Triton |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in bench.concurrency:
        ours, theirs = (
            _select(measurements, "trident", level),
            _select(measurements, "triton", level),
        )
        reference = overhead = "-"
        if level == 1 and hot_p50 is not None:
            reference = f"{hot_p50:,.1f}" + (f" / {_fmt(paced_p50, 1)}" if pause else "")
            if ours:
                hot = _median(_overheads(in_process, ours))
                paced = _median(_overheads(in_process, ours, paced=True)) if pause else None
                overhead = f"{hot:,.0f}" + (f" / {_fmt(paced)}" if pause else "")
        ours_rate = _median([m.throughput for m in ours]) if ours else None
        theirs_rate = _median([m.throughput for m in theirs]) if theirs else None
        ratio = f"{ours_rate / theirs_rate:.2f}" if ours_rate and theirs_rate else "-"
        lines.append(
            f"| {level} | {reference} "
            f"| {_fmt(_median([m.p50_us for m in ours]) if ours else None)} | {overhead} "
            f"| {_fmt(ours_rate)} | {_fmt(theirs_rate)} | {ratio} |"
        )

    lines += [
        "",
        "| server | concurrency | infer/s | p50 µs | p99 µs | server CPU µs/infer | note |",
        "|---|---|---|---|---|---|---|",
    ]
    if in_process:
        lines.append(
            f"| in-process, back to back | 1 | - | {hot_p50:,.1f} "
            f"| {_median([p.p99_us for p in in_process]):,.1f} | - | |"
        )
    for level in bench.concurrency:
        for server in SERVERS:
            group = _select(measurements, server, level)
            if not group:
                continue
            rates = [m.throughput for m in group]
            spread = f" ({min(rates):,.0f} to {max(rates):,.0f})" if len(group) > 1 else ""
            cpu = [m.cpu_us_per_infer for m in group if m.cpu_us_per_infer is not None]
            notes = sorted({m.note for m in group if m.note})
            lines.append(
                f"| {server} | {level} | {_median(rates):,.0f}{spread} "
                f"| {_median([m.p50_us for m in group]):,.0f} "
                f"| {_median([m.p99_us for m in group]):,.0f} "
                f"| {_fmt(_median(cpu) if cpu else None)} | {', '.join(notes)} |"
            )

    lines += [
        "",
        "Where a request's time goes: perf_analyzer's average latency, the statistics API's "
        "averages per request (`success`: from the request's arrival in the core to its response; "
        "`queue` + `compute input` + `compute infer` + `compute output` make it up), and the rest, "
        "outside the core (frontend, wire, client). In-process session.run means for "
        "comparison: "
        + (
            f"{_median([p.mean_us for p in in_process]):,.1f} µs back to back"
            + (
                f", {_median([p.paced_mean_us for p in in_process]):,.1f} µs {pause} µs apart."
                if pause
                else "."
            )
            if in_process
            else "not measured."
        ),
        "",
        "| server | concurrency | average | success | queue | compute input | compute infer "
        "| compute output | outside the core |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level in bench.concurrency:
        for server in SERVERS:
            group = _select(measurements, server, level)
            if not group:
                continue
            avg = _median([m.avg_us for m in group])
            split = {key: _median([m.server_us[key] for m in group]) for key in STAT_KEYS}
            lines.append(
                f"| {server} | {level} | {avg:,.0f} | "
                + " | ".join(f"{split[key]:,.1f}" for key in STAT_KEYS)
                + f" | {avg - split['success']:,.0f} |"
            )

    ok = True
    lines += ["", "| check | measured | goal |", "|---|---|---|"]
    for server in SERVERS:
        group = _select(measurements, server, 1)
        if not (in_process and group):
            ok = False
            continue
        per_round = _overheads(in_process, group)
        overhead = _median(per_round)
        goal = "(for comparison)"
        if server == "trident":
            met = overhead < GOAL_OVERHEAD_US
            ok &= met
            goal = f"< {GOAL_OVERHEAD_US:.0f} {'met' if met else 'NOT met'}"
        lines.append(
            f"| {server} p50 - in-process p50 (back to back), c=1, µs (rounds: "
            f"{', '.join(f'{v:,.0f}' for v in per_round)}) | {overhead:,.0f} | {goal} |"
        )
    if in_server and in_process:
        by_round = {p.round: p for p in in_process}
        added = [s.p50_us - by_round[s.round].p50_us for s in in_server if s.round in by_round]
        own = [
            s.p50_us - s.echo_p50_us - by_round[s.round].p50_us
            for s in in_server
            if s.round in by_round
        ]
        met = _median(added) < GOAL_OVERHEAD_US
        ok &= met
        lines.append(
            "| trident in-server p50 - in-process p50 (back to back), c=1, µs, client in this "
            f"process over loopback TCP (rounds: {', '.join(f'{v:,.0f}' for v in added)}) "
            f"| {_median(added):,.0f} | < {GOAL_OVERHEAD_US:.0f} {'met' if met else 'NOT met'} |"
        )
        lines.append(
            "| the same, less the probe's loopback floor (an echo server: "
            f"{_median([s.echo_p50_us for s in in_server]):,.0f} µs p50) | "
            f"{_median(own):,.0f} | (Trident's own code) |"
        )
    ours, theirs = _select(measurements, "trident", 1), _select(measurements, "triton", 1)
    if ours and theirs:
        ratio = _median([m.throughput for m in ours]) / _median([m.throughput for m in theirs])
        met = ratio > GOAL_THROUGHPUT_RATIO
        ok &= met
        lines.append(
            f"| Trident / Triton infer/s, c=1 | {ratio:.2f} "
            f"| > {GOAL_THROUGHPUT_RATIO:.2f} {'met' if met else 'NOT met'} |"
        )
    else:
        ok = False
    return "\n".join(lines), ok


def _triton_ort_version() -> str:
    venv_python = peers.TOOLS_DIR / "triton-venv" / "bin" / "python"
    try:
        completed = subprocess.run(
            [str(venv_python), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return ""
    return completed.stdout.strip() if completed.returncode == 0 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds to take medians over")
    parser.add_argument(
        "--server", choices=SERVERS, action="append", help="only this server (repeatable)"
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4],
        help="levels (default: 1 4); the goals are checked at 1",
    )
    parser.add_argument("--quick", action="store_true", help="1 s windows, looser stability")
    parser.add_argument(
        "--in-process-seconds",
        type=float,
        default=1.5,
        help="in-process timing per round, back to back and again paced (default: 1.5)",
    )
    parser.add_argument(
        "--pause-us",
        type=int,
        default=1000,
        help="pause between paced in-process calls, about one request's round trip at "
        "concurrency 1; 0 skips the paced timing (default: 1000)",
    )
    parser.add_argument("--intra-op-threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument(
        "--in-server-calls",
        type=int,
        default=3000,
        help="calls per round for the in-server probe (perf/in_server_latency.py); 0 skips it",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    servers = tuple(args.server or SERVERS)
    bench = BenchSettings(
        protocol=args.protocol,
        concurrency=tuple(args.concurrency),
        measurement_ms=1000 if args.quick else 2000,
        max_trials=5 if args.quick else 8,
        stability_percentage=25 if args.quick else 10,
    )
    try:
        peers.find_perf_analyzer()
        if "triton" in servers:
            peers.find_tritonserver()
            triton_ort = _triton_ort_version()
            if not triton_ort:
                raise peers.PeerNotInstalledError(
                    "onnxruntime is missing from the Triton venv: run "
                    "perf/install_peers.sh --with-onnxruntime"
                )
            if triton_ort != ort.__version__:
                print(
                    f"# warning: onnxruntime {ort.__version__} here, {triton_ort} in Triton's venv",
                    file=sys.stderr,
                )
    except peers.PeerNotInstalledError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    peers.warn_if_busy()
    onnx_bytes = build_mlp_onnx()
    session = make_session(onnx_bytes, args.intra_op_threads)
    (expected,) = session.run(["OUTPUT0"], {"INPUT0": sample_input()})
    in_process: list[InProcess] = []
    in_server: list[InServer] = []
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        repositories = write_repositories(Path(tmp), onnx_bytes, args.intra_op_threads)
        for round_ in range(1, args.rounds + 1):
            in_process.append(
                measure_in_process(session, round_, args.in_process_seconds, args.pause_us)
            )
            if "trident" in servers and args.in_server_calls:
                in_server.append(
                    measure_in_server_round(repositories["trident"], round_, args.in_server_calls)
                )
            # Alternate the order so drift on a shared machine falls on both servers.
            order = servers if round_ % 2 else tuple(reversed(servers))
            for server in order:
                measurements += bench_server(
                    server, repositories[server], Path(tmp) / "logs", round_, bench, expected
                )
    text, ok = report(in_process, measurements, bench, in_server)
    print(f"onnxruntime {ort.__version__}, intra-op threads {args.intra_op_threads}")
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        raw = {
            "settings": {
                **asdict(bench),
                "onnxruntime": ort.__version__,
                "intra_op_threads": args.intra_op_threads,
                "pause_us": args.pause_us,
            },
            "in_process": [asdict(p) for p in in_process],
            "in_server": [asdict(p) for p in in_server],
            "servers": [asdict(m) for m in measurements],
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
