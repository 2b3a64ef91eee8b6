"""Start a server command (`trident serve`, or a peer such as tritonserver) as a subprocess.

- `start_trident()`: the `trident serve` command on free loopback ports, returned once ready.
- `start_server()`: any command taking tritonserver's address and port flags (Trident takes the
  same), the same way; perf/peers.py starts the real Triton with it.
- `ServerProcess`: what both return, a context manager that stops the server and its children,
  with its URLs, log, CPU time and a model's inference count (for CPU-per-inference figures).
- `free_ports()`, `process_tree()`: the pieces these need, also used by perf/soak.py.

Standard library only: the e2e tests and the benchmarks under perf/ both import it. Servers bind
127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class ServerStartError(RuntimeError):
    """A server process exited or did not become ready in time; carries its log tail."""


def tail(text: str, lines: int = 40) -> str:
    """The last `lines` lines of `text` (for error messages that quote a log)."""
    return "\n".join(text.splitlines()[-lines:])


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
        return sum(_process_cpu_seconds(pid) for pid in process_tree(self.process.pid))

    def inference_count(self, model: str) -> int:
        """The model's successful inference count over all versions, from the statistics API."""
        url = f"http://{self.http_url}/v2/models/{model}/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            stats = json.load(response)
        return sum(int(entry.get("inference_count", 0)) for entry in stats["model_stats"])

    def log_tail(self, lines: int = 40) -> str:
        try:
            return tail(self.log_path.read_text(errors="replace"), lines)
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


def process_tree(pid: int) -> list[int]:
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


def start_server(
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
    return start_server("trident", argv, dict(os.environ), log_dir, ready_timeout_s)
