"""Helpers to drive the outside tools Trident measures itself against.

- `find_perf_analyzer()` / `run_perf_analyzer()`: NVIDIA's load generator from the
  `.tools/perf-analyzer-venv` that `perf/install_peers.sh` creates, run with the library path it
  needs, its CSV report (`-f`) parsed into throughput and latency percentiles.
- `start_tritonserver()`: the real Triton server (from `.tools/triton-venv`) on free loopback
  ports, serving a given model repository.
- `start_trident()`: the `trident serve` command as a subprocess, the same way. Both return a
  `ServerProcess` (a context manager that stops it) with its URLs, log, CPU time and the
  model's inference count, for CPU-per-inference figures.
- `write_identity_model()` / `identity_repository()`: the Python-backend FP32 identity model.

Standard library only: this module is imported both from Trident's test suite and from the
scripts under `perf/`. Servers bind 127.0.0.1 only; load is never pointed anywhere else.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where perf/install_peers.sh installs the peers; TRIDENT_TOOLS_DIR overrides it.
TOOLS_DIR = Path(os.environ.get("TRIDENT_TOOLS_DIR", REPO_ROOT / ".tools"))
INSTALL_HINT = "run perf/install_peers.sh"


class PeerNotInstalledError(RuntimeError):
    """A peer tool is missing; the message says what to run."""


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer failed or reported errors; the message carries the tail of its output."""


class PerfAnalyzerUnstableError(PerfAnalyzerError):
    """No run of three measurement windows agreed within the stability percentage."""


class ServerStartError(RuntimeError):
    """A server process exited or did not become ready in time; carries its log tail."""


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


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


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
            raise PerfAnalyzerError(
                f"perf_analyzer ran past {timeout_s:.0f} s:\n{_tail(output)}"
            ) from None
        output = completed.stdout
        if "Failed to obtain stable measurement" in output:
            # With several levels it skips the unstable one; with one it exits with 2.
            raise PerfAnalyzerUnstableError(
                f"perf_analyzer found no stable measurement (raise max_trials or "
                f"stability_percentage):\n{_tail(output)}"
            )
        if completed.returncode != 0:
            raise PerfAnalyzerError(
                f"perf_analyzer exited with {completed.returncode}:\n{_tail(output)}"
            )
        failure = _reported_failure(output)
        if failure:
            raise PerfAnalyzerError(f"perf_analyzer reported {failure}:\n{_tail(output)}")
        if not csv_path.is_file():
            raise PerfAnalyzerError(f"perf_analyzer wrote no CSV:\n{_tail(output)}")
        results = parse_perf_csv(csv_path.read_text())
    wanted = set(levels)
    results = [r for r in results if r.concurrency in wanted]
    if sorted(r.concurrency for r in results) != sorted(wanted):
        missing = sorted(wanted - {r.concurrency for r in results})
        raise PerfAnalyzerError(f"perf_analyzer has no result for {missing}:\n{_tail(output)}")
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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different TCP ports free on 127.0.0.1 right now. The sockets stay bound until all
    are picked, so the OS cannot hand out the same port twice."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


@dataclass
class ServerProcess:
    """A server started as a subprocess on loopback ports. Use as a context manager."""

    name: str
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and its live child processes
        (Triton's Python-backend stubs), from /proc. Linux only."""
        return sum(_process_cpu_seconds(pid) for pid in _process_tree(self.process.pid))

    def inference_count(self, model: str) -> int:
        """The model's successful inference count over all versions, from the statistics API."""
        url = f"http://{self.http_url}/v2/models/{model}/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            stats = json.load(response)
        return sum(int(entry.get("inference_count", 0)) for entry in stats["model_stats"])

    def log_tail(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        """Poll GET /v2/health/ready until 200; raise ServerStartError on exit or timeout."""
        url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with {self.process.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise ServerStartError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15) -> int:
        """SIGTERM, then SIGKILL to the server's own process group after `timeout_s`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                # Kill what this helper started: the server and its children (e.g. Triton's
                # Python-backend stubs), which share the session it was started in.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/PID/task/TID/children."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending += [int(child) for child in task.read_text().split()]
    return tree


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0  # exited between listing and reading
    # Fields after the parenthesised command name (which may hold spaces): utime is the 14th
    # field of the line, stime the 15th.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


_START_ATTEMPTS = 3  # a port picked by free_ports() can be taken before the server binds it


def _start(
    name: str,
    command: Sequence[str],
    env: dict[str, str],
    log_dir: Path | None,
    ready_timeout_s: float,
) -> ServerProcess:
    """Run `command` plus tritonserver-style address and port flags (Trident takes the same),
    on free loopback ports; wait until ready. Retries with new ports when one was taken."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"{name}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, _START_ATTEMPTS + 1):
        http_port, grpc_port, metrics_port = free_ports(3)
        argv = [
            *command,
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--http-port={http_port}",
            f"--grpc-port={grpc_port}",
            f"--metrics-port={metrics_port}",
        ]
        log_path = log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=log_dir,  # not the caller's folder: nothing there should land on sys.path
                start_new_session=True,  # its own process group, so stop() can kill all of it
            )
        server = ServerProcess(name, process, http_port, grpc_port, metrics_port, log_path)
        try:
            server.wait_ready(ready_timeout_s)
            return server
        except ServerStartError:
            server.stop(timeout_s=5)
            port_taken = "address already in use" in server.log_tail(200).lower()
            if not port_taken or attempt == _START_ATTEMPTS:
                raise
        except BaseException:
            server.stop(timeout_s=5)
            raise
    raise AssertionError("unreachable")


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
    return _start("tritonserver", command, triton.env, log_dir, ready_timeout_s)


def trident_command() -> list[str]:
    """The venv's `trident` console script, else `python -m trident.runtime.cli`."""
    script = Path(sys.executable).parent / "trident"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "trident.runtime.cli"]


def start_trident(
    repository: Path,
    *,
    command: Sequence[str] | None = None,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
    ready_timeout_s: float = 60,
) -> ServerProcess:
    """Start `trident serve` (`command`, default `trident_command()`) on free loopback ports."""
    argv = [
        *(command or trident_command()),
        "serve",
        f"--model-repository={repository}",
        "--exit-timeout-secs=5",
        *extra_args,
    ]
    return _start("trident", argv, dict(os.environ), log_dir, ready_timeout_s)


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
