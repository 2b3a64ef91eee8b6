"""DirectScheduler.resize: instances added or removed on a live scheduler, with fake instances.
No sockets; a real event loop because the scheduler runs batches as tasks."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from trident.backends.base import ModelInstance
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.instance_resize import (
    only_instance_counts_differ as _only_instance_counts_differ,
)
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.core.model_config import parse_config_text
from trident.runtime.core.scheduling.base import Scheduler, SingleResponder
from trident.runtime.core.scheduling.direct import DirectScheduler
from trident.runtime.core.stats import ModelStats
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor


class Named(ModelInstance):
    """Sleeps a little and answers with its own name."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    def execute(self, requests, timing):
        time.sleep(0.03)
        self.seen.append(self.name)
        out = np.array([self.name.encode()], dtype=np.object_)
        return [InferenceResponse(outputs=[Tensor("NAME", "BYTES", (1,), out)]) for _ in requests]


def _request(loop) -> InFlightRequest:
    request = InferenceRequest("m", inputs=[Tensor("X", "FP32", (1,), np.zeros(1, np.float32))])
    return InFlightRequest(request, 1, responder=SingleResponder(loop, threading.get_ident()))


def test_added_workers_take_queued_work_and_removed_ones_finish_first():
    async def scenario():
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        first = InstanceWorker("w0", Named("w0", seen), loop)
        scheduler = DirectScheduler("m", [first], ModelStats(), batched=False)
        requests = [_request(loop) for _ in range(6)]
        for request in requests:
            scheduler.submit(request)
        assert scheduler.pending_count() == 5
        extra = [InstanceWorker(f"w{i}", Named(f"w{i}", seen), loop) for i in (1, 2)]
        removed = await scheduler.resize([first, *extra])
        assert removed == []
        assert scheduler.pending_count() == 3  # two queued requests went to the new workers
        results = [await r.responder.result() for r in requests]
        # Now shrink to one worker while one of the removed ones is busy.
        busy = _request(loop)
        running_on = scheduler._pool.idle[-1]  # submit hands the request to the last idle one
        scheduler.submit(busy)
        keep = next(w for w in (first, *extra) if w is not running_on)
        removed = await scheduler.resize([keep])
        assert set(removed) == {first, *extra} - {keep}
        assert busy.responder.future.done()  # resize returned once its worker was idle
        assert busy.responder.future.result().error is None
        after = [_request(loop) for _ in range(3)]
        seen.clear()
        for request in after:
            scheduler.submit(request)
        for request in after:
            await request.responder.result()
        await scheduler.stop()
        for worker in (first, *extra):
            worker.close()
        return results, seen, keep.name

    results, seen_after, kept = asyncio.run(scenario())
    assert all(r.error is None for r in results)
    names = {r.outputs[0].data[0] for r in results}
    assert names == {b"w0", b"w1", b"w2"}
    assert set(seen_after) == {kept}  # only the kept worker serves after shrinking


def test_the_base_scheduler_refuses_to_resize():
    class Minimal(Scheduler):
        def submit(self, request):
            pass

        async def stop(self):
            pass

    async def scenario():
        try:
            await Minimal().resize([])
        except Exception as exc:
            return exc
        return None

    error = asyncio.run(scenario())
    assert error is not None and error.http_status == 501


def _config(count: int, extra: str = "") -> object:
    return parse_config_text(
        f'name: "m" backend: "python" instance_group [ {{ count: {count} kind: KIND_CPU }} ]'
        + extra
    )


def test_only_a_count_change_qualifies_for_an_in_place_change():
    assert _only_instance_counts_differ(_config(1), _config(3))
    assert not _only_instance_counts_differ(_config(2), _config(2))
    assert not _only_instance_counts_differ(_config(1), _config(3, " max_batch_size: 4"))
    two_groups = parse_config_text(
        'name: "m" instance_group [ { count: 1 kind: KIND_CPU }, { count: 1 kind: KIND_CPU } ]'
    )
    assert not _only_instance_counts_differ(_config(1), two_groups)
