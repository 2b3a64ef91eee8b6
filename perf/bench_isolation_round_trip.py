"""One isolated Python model's round trip, without the server: sleeping vs busy polling.

Starts the model process of an isolated identity model (FP32[16]) as the server does
(`ModelProcess`), then sends one batch at a time and waits for its answer, as the server's
instance does: encode, send, wait, decode. Measured two ways, alternating, in the same run:

- `sleeping`: both sides sleep until the other's message arrives (`busy_poll_us` 0): the server
  in `select`, the model process in `recv`;
- `polling`: both sides poll for up to `--poll-us` first (the default `busy_poll_us`, 1000).

It prints the mean round trip of each and their ratio: what a wake-up costs on this machine,
where the code that runs right after one is also slower (cold caches, a vCPU resumed). That is
why isolated models poll by default (docs/python-backend.md, "Busy polling").

Usage (from the repository root, with Trident's venv):

    .venv/bin/python -m perf.bench_isolation_round_trip [--round-trips 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from google.protobuf import text_format

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perf import peers
from trident.backends.python.isolation import wire
from trident.backends.python.isolation.process import ModelProcess
from trident.backends.python.isolation.settings import DEFAULT_BUSY_POLL_US
from trident.runtime.core.model_config import config_to_json
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor


def start_process(model_dir: Path, poll_s: float) -> ModelProcess:
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
    process = ModelProcess(1024 * 1024)
    process.start(
        {
            "mode": "instance",
            "config": config.SerializeToString().hex(),
            "config_json": config_to_json(config),
            "model_name": config.name,
            "model_version": 1,
            "model_dir": str(model_dir),
            "version_dir": str(model_dir / "1"),
            "instance_name": f"{config.name}_0",
            "kind": "CPU",
            "device_id": 0,
            "instance_index": 0,
            "log_level": logging.WARNING,
            "busy_poll_s": poll_s,
        }
    )
    return process


def mean_round_trip_us(model_dir: Path, poll_s: float, round_trips: int) -> float:
    """Mean microseconds per round trip, after a warm-up."""
    process = start_process(model_dir, poll_s)
    try:
        sock = process.sock
        assert sock is not None and process.to_child is not None
        sock.setblocking(False)
        answers: list[list[InferenceResponse]] = []

        def on_frame(kind: int, flags: int, tag: int, payload: memoryview) -> None:
            assert kind == wire.Kind.EXEC_DONE and flags & wire.Flag.RESPONSES, (kind, flags)
            assert process.from_child is not None
            answers.append(wire.decode_responses(payload, process.from_child))

        frames = wire.FrameBuffer(on_frame)
        data = np.arange(16, dtype=np.float32)
        request = InferenceRequest("identity", 1, inputs=[Tensor("INPUT0", "FP32", (16,), data)])
        flags = wire.Flag.POLL if poll_s else 0
        started = 0.0
        for index in range(round_trips + 500):
            if index == 500:
                started = time.perf_counter()
            payload, _ = wire.encode_requests([(index + 1, request)], process.to_child, 1)
            sock.sendall(wire.frame(wire.Kind.EXECUTE, index + 1, payload, flags))
            poll_until = time.monotonic() + poll_s
            while not answers:
                if time.monotonic() >= poll_until:
                    select.select((sock,), (), (), 5.0)
                try:
                    frames.feed(sock.recv(65536))
                except BlockingIOError:
                    continue
            np.testing.assert_array_equal(answers.pop()[0].outputs[0].data, data)
        return (time.perf_counter() - started) / round_trips * 1e6
    finally:
        process.stop(kill=True, wait_s=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=5000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternate, report medians")
    parser.add_argument("--poll-us", type=int, default=DEFAULT_BUSY_POLL_US)
    args = parser.parse_args(argv)
    peers.warn_if_busy()
    sleeping, polling = [], []
    with tempfile.TemporaryDirectory(prefix="bench-round-trip-") as tmp:
        model_dir = peers.write_identity_model(Path(tmp), "identity", max_batch_size=0)
        for _ in range(args.rounds):
            sleeping.append(mean_round_trip_us(model_dir, 0.0, args.round_trips))
            polling.append(mean_round_trip_us(model_dir, args.poll_us / 1e6, args.round_trips))
    asleep, polled = statistics.median(sleeping), statistics.median(polling)
    print(f"isolated identity model, one batch at a time, median of {args.rounds} rounds")
    print("| both sides | round trip µs | rounds |")
    print("|---|---|---|")
    print(f"| sleeping | {asleep:.1f} | {', '.join(f'{v:.0f}' for v in sleeping)} |")
    print(
        f"| polling ({args.poll_us} µs) | {polled:.1f} | {', '.join(f'{v:.0f}' for v in polling)} |"
    )
    print(f"\nsleeping / polling: {asleep / polled:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
