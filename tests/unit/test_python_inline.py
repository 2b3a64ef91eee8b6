"""InlineRunner: batches run on the loop's thread, in a greenlet for models whose sources name a
server call; a wait for the server suspends the batch, which the worker thread then finishes
without running it again. Without the greenlet, a batch that called the server is handed over
finished. sources_name_server_calls decides which."""

from __future__ import annotations

import asyncio
import threading

import pytest

from trident.backends.base import ComputeTiming, MustRunOnWorkerThread
from trident.backends.python import inline
from trident.backends.python.inline import InlineRunner, sources_name_server_calls
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
        self.calls_server = False  # without waiting: as a failed call from bls.py does
        self.threads: list[int] = []

    def execute(self, requests: list[InferenceRequest], timing: ComputeTiming) -> list[float]:
        self.starts += 1
        self.threads.append(threading.get_ident())
        timing.input_end_ns = 1
        if self.calls_server:
            assert self.runner is not None
            self.runner.server_called()
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


def _runner(
    model: Model, loop: asyncio.AbstractEventLoop, suspends: bool = True
) -> tuple[InlineRunner, list[str]]:
    calls: list[str] = []
    runner: InlineRunner[list[float]] = InlineRunner(
        model.execute, loop, lambda: calls.append("stop inline"), suspends=suspends
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


@pytest.mark.parametrize("suspends", [True, False])
def test_a_batch_runs_on_the_loops_thread_and_returns_its_result(loop, suspends) -> None:
    model = Model()
    runner, calls = _runner(model, loop, suspends)
    request = InferenceRequest(model_name="m")
    for _ in range(3):
        assert runner.run([request], ComputeTiming()) == [0.0]
    assert model.starts == 3
    assert set(model.threads) == {threading.get_ident()}
    assert calls == []
    assert (runner._greenlet is not None) is suspends


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


@pytest.mark.parametrize("suspends", [True, False])
def test_a_batch_that_called_the_server_without_waiting_is_handed_over_finished(
    loop, suspends
) -> None:
    """A call refused by bls.py (from a model thread while the loop is held, or from a model
    run without a greenlet) ends inline execution too: the batch that ran is handed over
    finished, and `finish` only returns its result."""
    model = Model()
    runner, calls = _runner(model, loop, suspends)
    model.calls_server = True
    result, _ = _run_inline_then_finish(runner, loop, [InferenceRequest(model_name="m")])
    assert result == [0.0]
    assert model.starts == 1
    assert calls == ["stop inline"]


@pytest.mark.parametrize("suspends", [True, False])
def test_the_failure_of_a_batch_that_called_the_server_is_raised_by_finish(loop, suspends) -> None:
    model = Model()
    runner, _ = _runner(model, loop, suspends)
    model.calls_server = True
    model.fail_with = ModelExecutionError("the call failed")
    result, _ = _run_inline_then_finish(runner, loop, [InferenceRequest(model_name="m")])
    assert isinstance(result, ModelExecutionError) and "the call failed" in str(result)
    assert model.starts == 1


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


def _model_dir(tmp_path, files: dict[str, str]):
    for relative, text in files.items():
        path = tmp_path / "m" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "m"


@pytest.mark.parametrize(
    ("files", "names_a_call"),
    [
        ({"1/model.py": "def execute(self, requests):\n    return []\n"}, False),
        ({"1/model.py": "result = request.exec()\n"}, True),
        ({"1/model.py": "x = await request.async_exec()\n"}, True),
        (
            {"1/model.py": "import helpers\n", "1/helpers/load.py": "pb_utils.load_model('m')\n"},
            True,
        ),
        ({"1/model.py": "pass\n", "utils.py": "getattr(r, 'is_model_ready')\n"}, True),
        ({"1/model.py": "executed = execute_all(exec_time)\n"}, False),  # other words
        ({"1/model.py": "pass\n", "1/notes.txt": "request.exec()\n"}, False),  # not Python
    ],
)
def test_sources_name_server_calls(tmp_path, files, names_a_call) -> None:
    assert sources_name_server_calls(_model_dir(tmp_path, files)) is names_a_call


def test_sources_past_the_scan_limit_count_as_naming_a_call(tmp_path, monkeypatch) -> None:
    model_dir = _model_dir(tmp_path, {"1/model.py": "x = 1\n" * 100})
    assert not sources_name_server_calls(model_dir)
    monkeypatch.setattr(inline, "SOURCE_SCAN_LIMIT_BYTES", 100)
    assert sources_name_server_calls(model_dir)
