"""InlineRunner: batches run in a greenlet on the loop's thread; a wait for the server
suspends the batch, which the worker thread then finishes without running it again."""

from __future__ import annotations

import asyncio
import threading

import pytest

from trident.backends.base import ComputeTiming, MustRunOnWorkerThread
from trident.backends.python.inline import InlineRunner
from trident.runtime.errors import ModelExecutionError
from trident.runtime.types import InferenceRequest


class Model:
    """Stands for an instance's execution: counts its starts, then waits for the server as
    many times as `waits` says, through the runner, adding up what the waits returned."""

    def __init__(self) -> None:
        self.runner: InlineRunner[list[float]] | None = None
        self.starts = 0
        self.waits: list[float] = []
        self.fail_with: BaseException | None = None
        self.threads: list[int] = []

    def execute(self, requests: list[InferenceRequest], timing: ComputeTiming) -> list[float]:
        self.starts += 1
        self.threads.append(threading.get_ident())
        timing.input_end_ns = 1
        if self.fail_with is not None:
            raise self.fail_with
        total = 0.0
        for value in self.waits:
            assert self.runner is not None and self.runner.runs_current_code()
            total += self.runner.wait(_later(value))
        timing.output_start_ns = 2
        return [total for _ in requests]


async def _later(value: float) -> float:
    await asyncio.sleep(0)
    if value < 0:
        raise ValueError(f"failed call {value}")
    return value


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _runner(model: Model, loop: asyncio.AbstractEventLoop) -> tuple[InlineRunner, list[str]]:
    calls: list[str] = []
    runner: InlineRunner[list[float]] = InlineRunner(
        model.execute, loop, lambda: calls.append("stop inline")
    )
    runner.armed = True
    model.runner = runner
    return runner, calls


def _run_inline_then_finish(
    runner: InlineRunner, loop: asyncio.AbstractEventLoop, requests: list[InferenceRequest]
) -> tuple[list[float] | BaseException, ComputeTiming]:
    """What the core does: run inline; on a hand-over, call `finish` on another thread with
    the same requests in a list of its own."""
    thread_timing = ComputeTiming()

    async def scenario() -> list[float] | BaseException:
        try:
            return runner.run(requests, ComputeTiming())
        except MustRunOnWorkerThread:
            pass
        try:
            return await loop.run_in_executor(None, runner.finish, list(requests), thread_timing)
        except Exception as exc:
            return exc

    return loop.run_until_complete(scenario()), thread_timing


def test_a_batch_runs_on_the_loops_thread_and_returns_its_result(loop) -> None:
    model = Model()
    runner, calls = _runner(model, loop)
    request = InferenceRequest(model_name="m")
    for _ in range(3):
        assert runner.run([request], ComputeTiming()) == [0.0]
    assert model.starts == 3
    assert set(model.threads) == {threading.get_ident()}
    assert calls == []


def test_a_wait_hands_the_batch_over_and_finish_resumes_it_without_running_it_again(
    loop,
) -> None:
    model = Model()
    runner, calls = _runner(model, loop)
    model.waits = [1.0, 2.0, 4.0]
    runner.server_called()  # what bls.py does before each wait
    requests = [InferenceRequest(model_name="m"), InferenceRequest(model_name="m")]
    result, timing = _run_inline_then_finish(runner, loop, requests)
    assert result == [7.0, 7.0]
    assert model.starts == 1
    assert calls == ["stop inline"]  # once, whatever the number of calls
    assert (timing.input_end_ns, timing.output_start_ns) == (1, 2)  # the batch's own times


def test_a_failed_call_is_raised_at_the_wait(loop) -> None:
    model = Model()
    runner, _ = _runner(model, loop)
    model.waits = [1.0, -1.0]
    result, _ = _run_inline_then_finish(runner, loop, [InferenceRequest(model_name="m")])
    assert isinstance(result, ValueError) and "failed call -1.0" in str(result)
    assert model.starts == 1


def test_the_instances_failure_is_raised_where_the_batch_ends(loop) -> None:
    model = Model()
    runner, _ = _runner(model, loop)
    model.fail_with = ModelExecutionError("broken")
    with pytest.raises(ModelExecutionError, match="broken"):
        runner.run([InferenceRequest(model_name="m")], ComputeTiming())
    model.fail_with = None
    assert runner.run([InferenceRequest(model_name="m")], ComputeTiming()) == [0.0]


def test_a_server_call_from_elsewhere_hands_the_finished_batch_over(loop) -> None:
    """A model thread's call (refused while the loop is held) ends inline execution too: the
    batch that ran is handed over finished, and `finish` only returns its result."""
    model = Model()
    runner, calls = _runner(model, loop)
    runner.server_called()
    result, _ = _run_inline_then_finish(runner, loop, [InferenceRequest(model_name="m")])
    assert result == [0.0]
    assert model.starts == 1
    assert calls == ["stop inline"]


def test_server_calls_while_loading_do_not_count(loop) -> None:
    model = Model()
    runner, calls = _runner(model, loop)
    runner.armed = False  # initialize() runs
    runner.server_called()
    runner.armed = True
    assert runner.run([InferenceRequest(model_name="m")], ComputeTiming()) == [0.0]
    assert calls == []


def test_finish_refuses_a_batch_that_was_not_handed_over(loop) -> None:
    model = Model()
    runner, _ = _runner(model, loop)
    with pytest.raises(ModelExecutionError, match="handed over"):
        runner.finish([InferenceRequest(model_name="m")], ComputeTiming())


def test_close_ends_the_parked_greenlet(loop) -> None:
    model = Model()
    runner, _ = _runner(model, loop)
    runner.run([InferenceRequest(model_name="m")], ComputeTiming())
    worker = runner._greenlet
    assert worker is not None and not worker.dead

    async def close_from_a_thread() -> None:
        await loop.run_in_executor(None, runner.close)
        await asyncio.sleep(0)  # the loop runs the stop it was sent

    loop.run_until_complete(close_from_a_thread())
    assert worker.dead
