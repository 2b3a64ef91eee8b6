"""Helpers to drive the outside tools Trident measures itself against.

- `find_perf_analyzer()` / `run_perf_analyzer()`: NVIDIA's load generator from the
  `.tools/perf-analyzer-venv` that `perf/install_peers.sh` creates, run with the library path it
  needs, its CSV report (`-f`) parsed into throughput and latency percentiles.
- `start_tritonserver()`: the real Triton server (from `.tools/triton-venv`) on free loopback
  ports, serving a given model repository.
- `start_trident()`: the `trident serve` command as a subprocess, the same way, from
  tests/launcher.py (the e2e tests start Trident with it too). Both return a `ServerProcess` (a
  context manager that stops it) with its URLs, log, CPU time and the model's inference count,
  for CPU-per-inference figures.
- `write_identity_model()` / `identity_repository()`: the Python-backend FP32 identity model.

Standard library only: this module is imported both from Trident's test suite and from the
scripts under `perf/` (run from the repository root, where `tests` is importable). Servers bind
127.0.0.1 only; load is never pointed anywhere else.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The launcher lives with the tests; the benchmarks reach it as peers.start_trident too.
from tests.launcher import ServerProcess, start_server, tail
from tests.launcher import start_trident as start_trident

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where perf/install_peers.sh installs the peers; TRIDENT_TOOLS_DIR overrides it.
TOOLS_DIR = Path(os.environ.get("TRIDENT_TOOLS_DIR", REPO_ROOT / ".tools"))
INSTALL_HINT = "run perf/install_peers.sh"


class PeerNotInstalledError(RuntimeError):
    """A peer tool is missing; the message says what to run."""


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer failed or reported errors; the message carries the tail of its output."""


class PerfAnalyzerUnstableError(PerfAnalyzerError):
    """No run of three measurement windows agreed within the stability percentage, or
    perf_analyzer ran past its time bound still trying (the benchmarks then measure once more
    with a loose stability bound and mark the level unstable)."""


# --------------------------------------------------------------------------------------------
# perf_analyzer


@dataclass(frozen=True)
class PerfAnalyzer:
    """A runnable perf_analyzer: the executable and the environment it needs."""

    executable: Path
    env: dict[str, str]


def _venv_site_packages(venv: Path) -> Path | None:
    candidates = sorted(venv.glob("lib/python3.*/site-packages"))
    return candidates[0] if candidates else None


def find_perf_analyzer(tools_dir: Path = TOOLS_DIR) -> PerfAnalyzer:
    """Locate perf_analyzer and build its environment (libcudart.so.12 on LD_LIBRARY_PATH).

    Raises PeerNotInstalledError when perf/install_peers.sh has not run.
    """
    venv = tools_dir / "perf-analyzer-venv"
    executable = venv / "bin" / "perf_analyzer"
    site_packages = _venv_site_packages(venv)
    if not executable.is_file() or site_packages is None:
        raise PeerNotInstalledError(f"perf_analyzer not found at {executable}: {INSTALL_HINT}")
    cudart = site_packages / "nvidia" / "cuda_runtime" / "lib"
    if not cudart.is_dir():
        raise PeerNotInstalledError(f"libcudart.so.12 not found in {cudart}: {INSTALL_HINT}")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(cudart), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return PerfAnalyzer(executable=executable, env=env)


@dataclass(frozen=True)
class PerfResult:
    """One concurrency level of a perf_analyzer run. Latencies are in microseconds."""

    concurrency: int
    throughput: float  # inferences per second
    p50_us: float
    p90_us: float
    p95_us: float
    p99_us: float
    row: dict[str, str] = field(repr=False, compare=False)


def parse_perf_csv(text: str) -> list[PerfResult]:
    """Parse the CSV perf_analyzer writes with `-f FILE` (one row per concurrency level)."""
    results = []
    for row in csv.DictReader(io.StringIO(text)):
        if not row.get("Concurrency"):
            continue
        results.append(
            PerfResult(
                concurrency=int(row["Concurrency"]),
                throughput=float(row["Inferences/Second"]),
                p50_us=float(row["p50 latency"]),
                p90_us=float(row["p90 latency"]),
                p95_us=float(row["p95 latency"]),
                p99_us=float(row["p99 latency"]),
                row=row,
            )
        )
    return results


@dataclass(frozen=True)
class PerfRun:
    """What one perf_analyzer invocation produced."""

    results: list[PerfResult]
    output: str  # stdout and stderr together


def run_perf_analyzer(
    model: str,
    url: str,
    *,
    protocol: str = "grpc",
    concurrency: Sequence[int] = (1,),
    measurement_ms: int = 3000,
    max_trials: int = 10,
    stability_percentage: float = 10,
    extra_args: Sequence[str] = (),
    timeout_s: float | None = None,
    analyzer: PerfAnalyzer | None = None,
) -> PerfRun:
    """Run perf_analyzer against `url` (must be 127.0.0.1) and return the parsed results.

    Each concurrency level gets `measurement_ms` windows until three in a row agree within
    `stability_percentage` (perf_analyzer's stability rule); a level still unstable after
    `max_trials` windows raises PerfAnalyzerUnstableError. PerfAnalyzerError: a non-zero exit,
    failed requests in its output, and running past `timeout_s` (by default the worst case of
    all windows plus a margin).
    """
    host = url.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"load only goes to 127.0.0.1, not {url}")
    analyzer = analyzer or find_perf_analyzer()
    if timeout_s is None:
        timeout_s = 30 + len(concurrency) * max_trials * (measurement_ms / 1000 + 1)
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        csv_path = Path(tmp) / "results.csv"
        # perf_analyzer wants "start:end:step"; measure exactly the levels asked for, one by one.
        levels = list(concurrency)
        command = [
            str(analyzer.executable),
            "-m",
            model,
            "-u",
            url,
            "-i",
            protocol,
            "--measurement-interval",
            str(measurement_ms),
            "--max-trials",
            str(max_trials),
            "--stability-percentage",
            str(stability_percentage),
            "-f",
            str(csv_path),
            *_concurrency_args(levels),
            *extra_args,
        ]
        try:
            completed = subprocess.run(
                command,
                env=analyzer.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout or ""
            if isinstance(output, bytes):
                output = output.decode(errors="replace")
            raise PerfAnalyzerUnstableError(
                f"perf_analyzer ran past {timeout_s:.0f} s:\n{tail(output)}"
            ) from None
        output = completed.stdout
        if "Failed to obtain stable measurement" in output:
            # With several levels it skips the unstable one; with one it exits with 2.
            raise PerfAnalyzerUnstableError(
                f"perf_analyzer found no stable measurement (raise max_trials or "
                f"stability_percentage):\n{tail(output)}"
            )
        if completed.returncode != 0:
            raise PerfAnalyzerError(
                f"perf_analyzer exited with {completed.returncode}:\n{tail(output)}"
            )
        failure = _reported_failure(output)
        if failure:
            raise PerfAnalyzerError(f"perf_analyzer reported {failure}:\n{tail(output)}")
        if not csv_path.is_file():
            raise PerfAnalyzerError(f"perf_analyzer wrote no CSV:\n{tail(output)}")
        results = parse_perf_csv(csv_path.read_text())
    wanted = set(levels)
    results = [r for r in results if r.concurrency in wanted]
    if sorted(r.concurrency for r in results) != sorted(wanted):
        missing = sorted(wanted - {r.concurrency for r in results})
        raise PerfAnalyzerError(f"perf_analyzer has no result for {missing}:\n{tail(output)}")
    return PerfRun(results=results, output=output)


def _concurrency_args(levels: list[int]) -> list[str]:
    """`--concurrency-range start:end:step` covering exactly `levels` (evenly spaced)."""
    if not levels or any(level < 1 for level in levels):
        raise ValueError(f"concurrency levels must be positive: {levels}")
    levels = sorted(set(levels))
    if len(levels) == 1:
        return ["--concurrency-range", f"{levels[0]}:{levels[0]}"]
    step = levels[1] - levels[0]
    if any(b - a != step for a, b in itertools.pairwise(levels)):
        raise ValueError(f"concurrency levels must be evenly spaced: {levels}")
    return ["--concurrency-range", f"{levels[0]}:{levels[-1]}:{step}"]


def _reported_failure(output: str) -> str | None:
    """perf_analyzer prints "Thread [n] had error: ..." for failed requests; treat any as fatal."""
    for line in output.splitlines():
        lowered = line.lower()
        if "had error" in lowered or ("failed to" in lowered and "stable" not in lowered):
            return line.strip()
    return None


# --------------------------------------------------------------------------------------------
# servers as subprocesses


def warn_if_busy() -> None:
    """Other work on the machine skews every figure: say so before measuring."""
    try:
        load1 = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if load1 > 0.5:
        print(
            f"# warning: load average {load1:.2f} before the run; other processes share the CPU",
            file=sys.stderr,
        )


@dataclass(frozen=True)
class TritonInstall:
    """The real tritonserver from nvidia-pytriton and how to run it."""

    executable: Path
    backend_dir: Path
    env: dict[str, str]


def find_tritonserver(tools_dir: Path = TOOLS_DIR) -> TritonInstall:
    """Locate tritonserver in .tools/triton-venv; raise PeerNotInstalledError if missing."""
    venv = tools_dir / "triton-venv"
    site_packages = _venv_site_packages(venv)
    root = site_packages / "pytriton" / "tritonserver" if site_packages else None
    if root is None or not (root / "bin" / "tritonserver").is_file():
        raise PeerNotInstalledError(f"tritonserver not found in {venv}: {INSTALL_HINT}")
    if not (root / "backends" / "python" / "triton_python_backend_stub").is_file():
        raise PeerNotInstalledError(f"python_backend stub not installed in {root}: {INSTALL_HINT}")
    env = dict(os.environ)
    # Trident's own triton_python_backend_utils.py must not shadow Triton's in the stub.
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    # As pytriton does: the Python-backend stub embeds Python and finds numpy through the venv
    # first on PATH.
    env["PATH"] = os.pathsep.join((str(venv / "bin"), env.get("PATH", "")))
    return TritonInstall(root / "bin" / "tritonserver", root / "backends", env)


def start_tritonserver(
    repository: Path,
    *,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
    ready_timeout_s: float = 120,
) -> ServerProcess:
    """Start real Triton on free loopback ports serving `repository`; returns once ready."""
    triton = find_tritonserver()
    command = [
        str(triton.executable),
        f"--model-repository={repository}",
        f"--backend-directory={triton.backend_dir}",
        "--exit-timeout-secs=5",
        *extra_args,
    ]
    return start_server("tritonserver", command, triton.env, log_dir, ready_timeout_s)


# --------------------------------------------------------------------------------------------
# models

IDENTITY_MODEL_PY = '''\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Returns INPUT0 as OUTPUT0, one response per request."""

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            output = pb_utils.Tensor("OUTPUT0", data)
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
'''


def identity_config(name: str, max_batch_size: int = 0, dims: int = 16) -> str:
    """config.pbtxt of a Python-backend FP32 identity model, one CPU instance."""
    return f"""\
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {dims} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {dims} ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def write_identity_model(
    repository: Path, name: str = "identity", max_batch_size: int = 0, dims: int = 16
) -> Path:
    """Write the Python-backend identity model (model.py + config.pbtxt) into `repository`."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(identity_config(name, max_batch_size, dims))
    (model_dir / "1" / "model.py").write_text(IDENTITY_MODEL_PY)
    return model_dir


@contextlib.contextmanager
def identity_repository(max_batch_size: int = 0) -> Iterator[Path]:
    """A temporary model repository holding the identity model; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="identity-repo-") as tmp:
        repository = Path(tmp)
        write_identity_model(repository, max_batch_size=max_batch_size)
        yield repository
