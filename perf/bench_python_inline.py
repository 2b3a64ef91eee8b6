"""What running a Python model's inline batches in a greenlet costs per request.

An in-process Python model that runs inline (on the event loop) runs each batch inside a
greenlet of its instance, so that a BLS call suspends the batch instead of forcing it to run
again on the worker thread (backends/python/inline.py). This measures one inline execution of
the identity model (FP32[16]) through `InstanceWorker.execute_now`, as the schedulers call it,
two ways on the same instance in the same run: through the greenlet (what the server does) and
calling the instance's execution directly (what it did before: no suspension possible).

    .venv/bin/python perf/bench_python_inline.py [--calls 20000] [--rounds 7]

Prints the median time per execution of each way, the difference and their ratio. Results are
in perf/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: the repository root holds `tests` and `perf`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trident.backends.base import InstanceContext
from trident.backends.python.backend import PythonBackend, PythonModelInstance
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.model_config import config_to_json, normalize, parse_config_text
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

MODEL_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""
CONFIG = """
name: "identity"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""


async def _unused_infer(request: InferenceRequest) -> InferenceResponse:
    raise AssertionError("the identity model makes no BLS call")


async def _unused_stream(request: InferenceRequest):  # type: ignore[no-untyped-def]
    raise AssertionError("the identity model makes no BLS call")
    yield


def _instance(root: Path, loop: asyncio.AbstractEventLoop) -> PythonModelInstance:
    model_dir = root / "identity"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(MODEL_PY)
    config = parse_config_text(CONFIG)
    normalize(config, "identity", "python")
    context = InstanceContext(
        config=config,
        model_name="identity",
        model_version=1,
        model_dir=model_dir,
        version_dir=model_dir / "1",
        instance_name="identity_0_0",
        loop=loop,
        infer=_unused_infer,
        stream_infer=_unused_stream,
        config_json=config_to_json(config),
    )
    instance = PythonBackend().create_instance(context)
    assert isinstance(instance, PythonModelInstance)
    return instance


async def _measure(calls: int, rounds: int, root: Path) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    instance = _instance(root, loop)
    worker = InstanceWorker("identity", instance, loop)
    request = InferenceRequest(
        model_name="identity",
        inputs=[Tensor("INPUT0", "FP32", (16,), np.ones(16, np.float32))],
    )
    for _ in range(100):  # on the thread until the worker trusts its average, then inline
        await worker.execute([request])
        if worker.runs_inline:
            break
    if not worker.runs_inline:
        raise SystemExit("the model never went inline (a busy machine?): run again")
    runner = instance._inline
    batch = [request]
    results: dict[str, list[float]] = {"greenlet": [], "direct": []}
    for _ in range(rounds):
        for way in ("greenlet", "direct"):
            instance._inline = runner if way == "greenlet" else None
            for _ in range(calls // 10):  # warm
                worker.execute_now(batch)
            start = time.perf_counter_ns()
            for _ in range(calls):
                worker.execute_now(batch)
            results[way].append((time.perf_counter_ns() - start) / calls)
    instance._inline = runner
    if not worker.runs_inline:
        raise SystemExit("the worker left inline execution during the run: run again")
    await loop.run_in_executor(None, worker.close)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="executions per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="alternating measurements")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        results = asyncio.run(_measure(args.calls, args.rounds, Path(root)))
    greenlet_ns = statistics.median(results["greenlet"])
    direct_ns = statistics.median(results["direct"])
    print(f"inline execution through the greenlet: {greenlet_ns / 1000:.2f} us (median)")
    print(f"inline execution called directly:      {direct_ns / 1000:.2f} us (median)")
    print(f"difference: {(greenlet_ns - direct_ns) / 1000:+.2f} us per execution")
    print(f"greenlet / direct: {greenlet_ns / direct_ns:.3f}")


if __name__ == "__main__":
    main()
