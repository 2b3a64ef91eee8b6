"""What the JSON nesting check (--http-max-json-depth) costs, against json.loads of the same body.

Bodies: a typical ~1 KiB /infer request (fast path: no more brackets than the limit), the same
tensor sent as 200 nested rows (slow path), a 32 MiB load request of base64 text, and an attack
of 64 MiB of brackets (refused from its first 64 KiB).

Usage (from the repository root): .venv/bin/python -m perf.bench_json_depth
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trident.runtime.core.json_depth import DEFAULT_MAX_JSON_DEPTH, check_json_depth
from trident.runtime.errors import InvalidArgumentError


def _per_call_s(function: object, budget_s: float = 0.5) -> float:
    timer = timeit.Timer(function)  # type: ignore[arg-type]
    number, _ = timer.autorange()
    runs = max(1, int(number * budget_s / 0.2))
    return min(timer.repeat(repeat=5, number=runs)) / runs


def _check(body: bytes) -> None:
    try:
        check_json_depth(body, DEFAULT_MAX_JSON_DEPTH)
    except InvalidArgumentError:
        pass


def main() -> None:
    infer = {
        "id": "42",
        "inputs": [
            {
                "name": "INPUT0",
                "shape": [1, 100],
                "datatype": "FP32",
                "data": [i * 1.25 for i in range(100)],
            }
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}],
    }
    rows = dict(infer, inputs=[dict(infer["inputs"][0], shape=[200, 2], data=[[1.5, 2.5]] * 200)])
    load = {"parameters": {"config": "{}", "file:1/model.py": "QUJD" * (8 << 20)}}
    bodies = {
        "infer, ~1 KiB, flat data": json.dumps(infer).encode(),
        "infer, 200 nested rows": json.dumps(rows).encode(),
        "load, 32 MiB of base64": json.dumps(load).encode(),
    }
    print(f"{'body':28} {'bytes':>10} {'check':>12} {'json.loads':>12} {'ratio':>7}")
    for name, body in bodies.items():
        check = _per_call_s(lambda body=body: _check(body))
        parse = _per_call_s(lambda body=body: json.loads(body))
        timings = f"{check * 1e6:>10.2f}us {parse * 1e6:>10.2f}us {check / parse:>7.3f}"
        print(f"{name:28} {len(body):>10} {timings}")
    attack = b"[" * (32 << 20) + b"]" * (32 << 20)
    refused = _per_call_s(lambda: _check(attack), budget_s=0.2)
    print(f"{'attack, 64 MiB of brackets':28} {len(attack):>10} {refused * 1e6:>10.0f}us (refused)")


if __name__ == "__main__":
    main()
