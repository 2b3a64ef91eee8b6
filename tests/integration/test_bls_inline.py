"""A Python model's calls to the server (BLS) never make its execute run twice, inline or not.

Short synchronous Python models run inline on the event loop once they have proved short on
their thread. The models here (tests/models/bls_logger, bls_hidden, bls_logger_async) append
one line per request to a file before making their call, so a batch executed twice shows up as
a value logged twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers import (
    IDENTITY_MODEL_PY,
    MODELS,
    RunningServer,
    copy_models,
    identity_config,
    model_source,
    running_server,
    write_model,
)

#: Copies of bls_logger, one per test: running inline, or not, is a state of each instance.
LOGGERS = ("always_exec", "late_exec", "late_stream", "late_ready", "late_thread")
#: The worker threads of instances are named after this prefix; the loop's thread is not.
WORKER_THREAD_PREFIX = "trident-"


class LogLine(NamedTuple):
    value: float
    thread: str


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = copy_models(
        tmp_path_factory.mktemp("bls_inline"), "bls_logger_async", "bls_hidden", "repeat"
    )
    write_model(repository, "inner", IDENTITY_MODEL_PY, identity_config("inner"))
    config = (MODELS / "bls_logger" / "config.pbtxt").read_text()
    for name in LOGGERS:
        write_model(
            repository,
            name,
            model_source("bls_logger"),
            config.replace('name: "bls_logger"', f'name: "{name}"'),
        )
    return repository


@pytest.fixture(scope="module")
def server(repository: Path):
    with running_server(repository) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


def _infer(
    client: grpcclient.InferenceServerClient, model: str, value: float, call: str = "none"
) -> np.ndarray:
    tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
    tensor.set_data_from_numpy(np.full(16, value, np.float32))
    result = client.infer(model, [tensor], parameters={"call": call}, client_timeout=30)
    return result.as_numpy("OUTPUT0")


def _log(repository: Path, model: str) -> list[LogLine]:
    path = repository / model / "calls.log"
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        value, thread = line.split(" ", 1)
        lines.append(LogLine(float(value), thread))
    return lines


def _assert_each_logged_once(lines: list[LogLine], values: list[float]) -> None:
    counts = Counter(line.value for line in lines)
    twice = sorted(value for value, count in counts.items() if count > 1)
    assert not twice, f"executed more than once for these requests: {twice}"
    assert sorted(counts) == sorted(values)


def _run_until_inline(
    client: grpcclient.InferenceServerClient, repository: Path, model: str
) -> list[float]:
    """Send plain requests until the model runs on the loop's thread; returns their values."""
    sent = []
    for value in range(1, 201):
        assert _infer(client, model, value)[0] == value
        sent.append(float(value))
        if not _log(repository, model)[-1].thread.startswith(WORKER_THREAD_PREFIX):
            return sent
    pytest.fail(f"model '{model}' never ran inline in {len(sent)} requests")


def test_a_model_that_always_calls_bls_executes_each_request_once(client, repository) -> None:
    values = [float(value) for value in range(1, 41)]  # past the inline warm-up (16)
    for value in values:
        assert _infer(client, "always_exec", value, "exec")[0] == value + 1
    lines = _log(repository, "always_exec")
    _assert_each_logged_once(lines, values)
    # It called the server while its executions were watched: it never went inline.
    assert all(line.thread.startswith(WORKER_THREAD_PREFIX) for line in lines)


@pytest.mark.parametrize(
    ("model", "call", "added"),
    [("late_exec", "exec", 1.0), ("late_stream", "stream", 3.0), ("late_ready", "ready", 1.0)],
)
def test_a_first_call_from_an_inline_execution_completes_without_a_rerun(
    client, repository, model: str, call: str, added: float
) -> None:
    values = _run_until_inline(client, repository, model)
    assert _infer(client, model, 1000.0, call)[0] == 1000.0 + added
    values.append(1000.0)
    # The model called the server once: it stays on its own thread from now on.
    for value in (1001.0, 1002.0, 1003.0):
        assert _infer(client, model, value, call)[0] == value + added
        values.append(value)
    lines = _log(repository, model)
    _assert_each_logged_once(lines, values)
    after = [line for line in lines if line.value > 1000.0]
    assert all(line.thread.startswith(WORKER_THREAD_PREFIX) for line in after), after


def test_a_call_from_a_model_thread_while_inline_fails_fast_and_the_next_one_works(
    client, repository
) -> None:
    """The model's own thread cannot reach the server while execute holds the event loop
    (waiting for that thread): the call fails at once instead of hanging the server, the batch
    is not run again, and the model leaves the loop for its own thread, where the call works."""
    values = _run_until_inline(client, repository, "late_thread")
    with pytest.raises(InferenceServerException, match="runs inline on the server's event loop"):
        _infer(client, "late_thread", 1000.0, "thread")
    assert _infer(client, "late_thread", 1001.0, "thread")[0] == 1002.0
    lines = _log(repository, "late_thread")
    _assert_each_logged_once(lines, [*values, 1000.0, 1001.0])
    assert lines[-1].thread.startswith(WORKER_THREAD_PREFIX)


def test_a_call_the_sources_do_not_name_fails_inline_without_a_rerun_and_then_works(
    client, repository
) -> None:
    """bls_hidden builds the method name at run time: the server ran it inline without a
    greenlet, so its first call cannot suspend the batch. It fails, saying why, the batch is not
    run again, and the model goes to its own thread, where the call works."""
    values = _run_until_inline(client, repository, "bls_hidden")
    with pytest.raises(InferenceServerException, match=r"no \.py file in its folder names"):
        _infer(client, "bls_hidden", 1000.0, "bls")
    assert _infer(client, "bls_hidden", 1001.0, "bls")[0] == 1002.0
    lines = _log(repository, "bls_hidden")
    _assert_each_logged_once(lines, [*values, 1000.0, 1001.0])
    assert lines[-1].thread.startswith(WORKER_THREAD_PREFIX)


def test_an_async_model_awaiting_bls_executes_each_request_once(client, repository) -> None:
    values = [float(value) for value in range(1, 41)]
    for value in values:
        assert _infer(client, "bls_logger_async", value)[0] == value + 1
    _assert_each_logged_once(_log(repository, "bls_logger_async"), values)
