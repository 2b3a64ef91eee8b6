"""What the inline runner of Python models costs per execution (backends/python/inline.py).

An in-process Python model that runs inline (on the event loop) goes through its instance's
InlineRunner, which keeps a BLS call from running a batch twice: models whose sources name a
server call run their inline batches in a greenlet (the call suspends the batch), others run
them directly and only have their calls watched. This measures one inline execution of the
identity model (FP32[16]) through `InstanceWorker.execute_now`, as the schedulers call it, three
ways on the same instance in the same run:

- `runner`: what the server does for this model (its sources name no server call: no greenlet);
- `bare`: the instance's own execution, called by the core without the runner;
- `greenlet`: the runner as for a model whose sources name a server call.

    .venv/bin/python perf/bench_python_inline.py [--calls 10000] [--rounds 15]

Prints the median time per execution of each way and their ratios to `bare`. The loop runs
the same execution back to back, so caches stay warm: between requests in a real server a
greenlet switch pair costs more (perf/README.md). Results are in perf/README.md.
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
from trident.runtime.core.in_flight import validated
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
WAYS = ("runner", "bare", "greenlet")
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
    request = validated(
        InferenceRequest(
            model_name="identity",
            inputs=[Tensor("INPUT0", "FP32", (16,), np.ones(16, np.float32))],
        ),
        1,
    )
    for _ in range(100):  # on the thread until the worker trusts its average, then inline
        await worker.execute([request])
        if worker.runs_inline:
            break
    if not worker.runs_inline:
        raise SystemExit("the model never went inline (a busy machine?): run again")
    runner = instance._inline
    assert runner is not None and not runner.suspends  # the identity model names no call
    batch = [request]
    results: dict[str, list[float]] = {way: [] for way in WAYS}
    for round_ in range(rounds):
        shift = round_ % len(WAYS)  # each way takes each place in the order in turn
        for way in WAYS[shift:] + WAYS[:shift]:
            instance._inline = None if way == "bare" else runner
            instance.execute_inline = None if way == "bare" else runner.run
            runner.suspends = way == "greenlet"
            for _ in range(calls // 10):  # warm
                worker.execute_now(batch)
            start = time.perf_counter_ns()
            for _ in range(calls):
                worker.execute_now(batch)
            results[way].append((time.perf_counter_ns() - start) / calls)
    instance._inline = runner
    instance.execute_inline = runner.run
    runner.suspends = False
    if not worker.runs_inline:
        raise SystemExit("the worker left inline execution during the run: run again")
    await loop.run_in_executor(None, worker.close)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10000, help="executions per measurement")
    parser.add_argument("--rounds", type=int, default=15, help="alternating measurements")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        results = asyncio.run(_measure(args.calls, args.rounds, Path(root)))
    medians = {way: statistics.median(times) for way, times in results.items()}
    bare = medians["bare"]
    for way in WAYS:
        print(
            f"{way:>8}: {medians[way] / 1000:6.2f} us per inline execution (median), "
            f"{(medians[way] - bare) / 1000:+.2f} us, {medians[way] / bare:.3f} x bare"
        )


if __name__ == "__main__":
    main()
