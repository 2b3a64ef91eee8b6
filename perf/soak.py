"""Soak: the real server under mixed HTTP and gRPC traffic, misbehaving models and load/unload
cycles, for a bounded time; reports what was served, the errors by kind, and the server's
resident memory at the start and the end. Not part of CI.

The server (`trident serve`, a subprocess on loopback ports, explicit model control) serves a
temporary repository of Python models:

- `identity`: returns its input (the answers are checked);
- `raises`: raises in `execute` (each request must fail alone);
- `hangs`: sleeps past the client's timeout (the client gives up; the server must carry on);
- `exits`: calls `os._exit(3)` in `execute`, in a child process (`isolation: process`); the
  requests it held must fail and the child be restarted. `--no-exiting-model` leaves it out
  (without working process isolation it would end the whole server);
- `cycled`: an identity model on disk, loaded and unloaded over and over by a control thread,
  which also loads `uploaded` from `file:` parameters and unloads it again.

Usage (from the repository root, with Trident's venv):

    .venv/bin/python -m perf.soak                      # 10 minutes
    .venv/bin/python -m perf.soak --minutes 2 --threads 4 --json soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import random
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.launcher import ServerProcess, process_tree, start_trident

IDENTITY_PY = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests]
"""
RAISES_PY = """
class TritonPythonModel:
    def execute(self, requests):
        raise RuntimeError("soak: raised on purpose")
"""
HANGS_PY = """
import time

class TritonPythonModel:
    def execute(self, requests):
        time.sleep({seconds})
        raise RuntimeError("soak: woke up after the client had left")
"""
EXITS_PY = """
import os

class TritonPythonModel:
    def execute(self, requests):
        os._exit(3)
"""


def _config(name: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
        {extra}
        """)


OVERRIDE_CONFIG = json.dumps(
    {
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [16]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [16]}],
    }
)


def write_repository(root: Path, hang_seconds: float, exiting_model: bool) -> list[str]:
    """Write the soak's models; returns the names to load at start."""
    models = {
        "identity": (IDENTITY_PY, _config("identity")),
        "raises": (RAISES_PY, _config("raises")),
        "hangs": (HANGS_PY.format(seconds=hang_seconds), _config("hangs")),
        "cycled": (IDENTITY_PY, _config("cycled")),
    }
    if exiting_model:
        isolation = 'parameters { key: "isolation" value: { string_value: "process" } }'
        models["exits"] = (EXITS_PY, _config("exits", isolation))
    for name, (source, config) in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(textwrap.dedent(source))
        (root / name / "config.pbtxt").write_text(config)
    return [name for name in models if name != "cycled"]


class ErrorKind(enum.StrEnum):
    TIMEOUT = "client timeout (expected for hangs; exits while its process restarts)"
    RAISED = "model raised (raises: expected)"
    EXITED = "model process exited (exits: expected)"
    NOT_READY = "model not ready (during a load/unload cycle)"
    CONNECTION = "connection failed (server down?)"
    WRONG_ANSWER = "wrong answer"
    OTHER = "other"


def classify(model: str, message: str) -> ErrorKind:
    lowered = message.lower()
    if message.startswith("wrong answer"):
        return ErrorKind.WRONG_ANSWER
    if "timed out" in lowered or "deadline" in lowered or "timeout" in lowered:
        return ErrorKind.TIMEOUT
    if "connection" in lowered or "unavailable: failed to connect" in lowered:
        return ErrorKind.CONNECTION
    if model == "raises" and "raised on purpose" in message:
        return ErrorKind.RAISED
    if model == "exits" and "exit" in lowered:
        return ErrorKind.EXITED
    if "not found" in lowered or "not at ready" in lowered or "no available versions" in lowered:
        return ErrorKind.NOT_READY
    return ErrorKind.OTHER


@dataclass
class Tally:
    """Counts shared by every client thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: Counter[str] = field(default_factory=Counter)
    served: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    cycles: int = 0

    def record(self, protocol: str, model: str, error: str | None) -> None:
        with self.lock:
            self.sent[protocol] += 1
            if error is None:
                self.served[f"{protocol} {model}"] += 1
                return
            kind = classify(model, error)
            self.errors[f"{kind} [{model}]"] += 1
            self.samples.setdefault(str(kind), error[:300])

    @property
    def total_sent(self) -> int:
        with self.lock:
            return sum(self.sent.values())


def _input(module: Any) -> tuple[Any, np.ndarray]:
    data = np.random.default_rng().random(16, dtype=np.float32)
    tensor = module.InferInput("INPUT0", [16], "FP32")
    tensor.set_data_from_numpy(data)
    return tensor, data


class Client:
    """One tritonclient of either protocol; a new HTTP connection after a timeout."""

    def __init__(self, server: ServerProcess, protocol: str, timeout_s: float) -> None:
        self.server, self.protocol, self.timeout_s = server, protocol, timeout_s
        self._connect()

    def _connect(self) -> None:
        if self.protocol == "http":
            self.client: Any = httpclient.InferenceServerClient(
                self.server.http_url, network_timeout=self.timeout_s, connection_timeout=5
            )
        else:
            self.client = grpcclient.InferenceServerClient(self.server.grpc_url)

    def infer(self, model: str) -> str | None:
        """None when the answer came back right, else the error's text."""
        module = httpclient if self.protocol == "http" else grpcclient
        tensor, data = _input(module)
        try:
            if self.protocol == "http":
                result = self.client.infer(model, [tensor])
            else:
                result = self.client.infer(model, [tensor], client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            return str(exc)
        except Exception as exc:  # socket timeouts, resets: the HTTP client raises them raw
            with contextlib.suppress(Exception):
                self.client.close()
            self._connect()
            return f"{type(exc).__name__}: {exc}"
        output = result.as_numpy("OUTPUT0")
        if output is None or not np.array_equal(output, data):
            return "wrong answer: the output differs from the input"
        return None


MIX = {"identity": 90.0, "raises": 6.0, "hangs": 1.5, "exits": 1.5}


def client_thread(
    server: ServerProcess,
    protocol: str,
    tally: Tally,
    stop: threading.Event,
    args: argparse.Namespace,
    seed: int,
) -> None:
    rng = random.Random(seed)
    models = [m for m in MIX if m != "exits" or args.exiting_model]
    weights = [MIX[m] for m in models]
    client = Client(server, protocol, args.client_timeout)
    while not stop.is_set() and tally.total_sent < args.max_requests:
        model = rng.choices(models, weights)[0]
        tally.record(protocol, model, client.infer(model))


def control_thread(
    server: ServerProcess, tally: Tally, stop: threading.Event, args: argparse.Namespace
) -> None:
    """Load/unload cycles, alternating protocols: a model on disk and one sent as files."""
    files = {"file:1/model.py": textwrap.dedent(IDENTITY_PY).encode()}
    cycle = 0
    while not stop.is_set():
        protocol = "http" if cycle % 2 == 0 else "grpc"
        client = Client(server, protocol, args.client_timeout)
        try:
            client.client.load_model("cycled")
            tally.record(protocol, "cycled", client.infer("cycled"))
            client.client.unload_model("cycled")
            client.client.load_model("uploaded", config=OVERRIDE_CONFIG, files=files)
            tally.record(protocol, "uploaded", client.infer("uploaded"))
            client.client.unload_model("uploaded")
            client.client.unload_model("never_loaded")  # idempotent: must succeed
            with tally.lock:
                tally.cycles += 1
        except Exception as exc:
            tally.record(protocol, "load/unload", f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            client.client.close()
        cycle += 1
        stop.wait(args.cycle_pause)


def rss_kib(pid: int) -> int:
    """VmRSS of one process, in KiB (0 when it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory(server: ServerProcess) -> tuple[int, int]:
    """(server VmRSS, VmRSS of its child processes) in KiB."""
    pid = server.process.pid
    children = [p for p in process_tree(pid) if p != pid]
    return rss_kib(pid), sum(rss_kib(p) for p in children)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--threads", type=int, default=4, help="client threads per protocol")
    parser.add_argument("--max-requests", type=int, default=5_000_000, help="stop after these")
    parser.add_argument("--client-timeout", type=float, default=2.0, help="seconds")
    parser.add_argument("--hang-seconds", type=float, default=4.0, help="`hangs` sleeps this")
    parser.add_argument("--cycle-pause", type=float, default=0.2, help="between load cycles")
    parser.add_argument(
        "--exiting-model",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve `exits` (needs Python process isolation)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if args.hang_seconds <= args.client_timeout:
        parser.error("--hang-seconds must exceed --client-timeout")

    with tempfile.TemporaryDirectory(prefix="trident-soak-") as folder:
        repository = Path(folder) / "models"
        startup = write_repository(repository, args.hang_seconds, args.exiting_model)
        extra = ["--model-control-mode=explicit", *(f"--load-model={m}" for m in startup)]
        with start_trident(repository, extra_args=extra, log_dir=Path(folder)) as server:
            return soak(server, args)


def soak(server: ServerProcess, args: argparse.Namespace) -> int:
    tally, stop = Tally(), threading.Event()
    rss_start = memory(server)
    print(f"server pid {server.process.pid}: VmRSS {rss_start[0]} KiB (children {rss_start[1]})")
    threads = [
        threading.Thread(
            target=client_thread, args=(server, protocol, tally, stop, args, 1000 * i + n)
        )
        for i, protocol in enumerate(("http", "grpc"))
        for n in range(args.threads)
    ]
    threads.append(threading.Thread(target=control_thread, args=(server, tally, stop, args)))
    started = time.monotonic()
    deadline = started + args.minutes * 60
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() < deadline and tally.total_sent < args.max_requests:
            time.sleep(min(30.0, max(deadline - time.monotonic(), 0.0)))
            rss = memory(server)
            elapsed = time.monotonic() - started
            print(
                f"t={elapsed:6.0f}s sent={tally.total_sent} served={sum(tally.served.values())} "
                f"cycles={tally.cycles} VmRSS={rss[0]} KiB (children {rss[1]})",
                flush=True,
            )
            if server.process.poll() is not None:
                print(f"the server exited with status {server.process.returncode}")
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=args.client_timeout + args.hang_seconds + 30)
    elapsed = time.monotonic() - started
    alive = server.process.poll() is None
    final_check = Client(server, "grpc", args.client_timeout).infer("identity") if alive else "-"
    rss_end = memory(server)
    report = {
        "minutes": round(elapsed / 60, 2),
        "threads_per_protocol": args.threads,
        "exiting_model": args.exiting_model,
        "sent": dict(tally.sent),
        "served": dict(tally.served),
        "served_total": sum(tally.served.values()),
        "served_per_s": round(sum(tally.served.values()) / elapsed, 1),
        "load_unload_cycles": tally.cycles,
        "errors": dict(tally.errors.most_common()),
        "error_samples": tally.samples,
        "vmrss_kib_start": rss_start[0],
        "vmrss_kib_end": rss_end[0],
        "children_vmrss_kib_start": rss_start[1],
        "children_vmrss_kib_end": rss_end[1],
        "server_alive_at_end": alive,
        "identity_served_at_end": final_check is None,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    unexpected = sum(
        count
        for kind, count in tally.errors.items()
        if kind.startswith((ErrorKind.OTHER, ErrorKind.WRONG_ANSWER, ErrorKind.CONNECTION))
    )
    return 0 if alive and final_check is None and unexpected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
