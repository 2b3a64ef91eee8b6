"""Python models that crash, hang, exit or raise BaseException, through the real server.

In process, SystemExit and friends become load failures or error responses. With process
isolation, a model process that dies fails only the requests it held and is restarted, and
unloading or stopping leaves no process and no shared-memory file behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import MODELS, RunningServer, copy_model, copy_models, running_server
from trident.backends.python.isolation import instance as isolated_instance
from trident.backends.python.isolation import shm, wire

MISBEHAVING = "isolated_misbehaving"
#: The same model with busy polling off (every wait sleeps in select / recv).
UNPOLLED = "isolated_unpolled"


def _our_files() -> set[str]:
    """This test process's shared-memory files (every server it runs makes them)."""
    prefix = f"{shm.FILE_PREFIX}{os.getpid()}-"
    return {name for name in os.listdir(shm.shm_directory()) if name.startswith(prefix)}


def _alive(pid: int) -> bool:
    """Until the server reaped it: a killed multi-threaded process can look like a zombie in
    /proc while its other threads (and its end of the socket) still exist."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _http_infer(
    client: httpclient.InferenceServerClient,
    model: str,
    data: np.ndarray,
    parameters: dict | None = None,
) -> httpclient.InferResult:
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return client.infer(model, [tensor], parameters=parameters)


def _pid(client: httpclient.InferenceServerClient) -> int:
    result = _http_infer(client, MISBEHAVING, np.zeros(2, np.float32))
    return int(result.as_numpy("OUTPUT1")[0])


def _reason(client: httpclient.InferenceServerClient, model: str) -> str:
    for entry in client.get_model_repository_index():
        if entry["name"] == model:
            return str(entry.get("reason", ""))
    return ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    repository = copy_models(
        tmp_path_factory.mktemp("isolation"),
        MISBEHAVING,
        "identity_fp32",
        "isolated_bls",
        "isolated_bls_async",
        "isolated_decoupled",
    )
    unpolled = copy_model(repository, MISBEHAVING, UNPOLLED) / "config.pbtxt"
    unpolled.write_text(
        unpolled.read_text().replace(f'name: "{MISBEHAVING}"', f'name: "{UNPOLLED}"')
        + 'parameters { key: "busy_poll_us" value: { string_value: "0" } }\n'
    )
    with running_server(repository) as running:
        yield running


@pytest.fixture
def http(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url, network_timeout=60)


def test_a_model_process_that_exits_fails_its_request_and_the_next_one_succeeds(http) -> None:
    before = _pid(http)
    with pytest.raises(InferenceServerException) as failure:
        _http_infer(http, MISBEHAVING, np.ones(4, np.float32), {"action": "exit"})
    message = str(failure.value)
    assert f"'{MISBEHAVING}'" in message and "exited with status 3" in message
    # Another model kept serving, and the repository index tells what happened.
    other = _http_infer(http, "identity_fp32", np.arange(3, dtype=np.float32))
    np.testing.assert_array_equal(other.as_numpy("OUTPUT0"), np.arange(3, dtype=np.float32))
    assert "exited with status 3" in _reason(http, MISBEHAVING)
    after = _http_infer(http, MISBEHAVING, np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(after.as_numpy("OUTPUT0"), np.arange(5, dtype=np.float32))
    assert int(after.as_numpy("OUTPUT1")[0]) != before
    assert not _alive(before)
    assert http.is_server_live()


def test_sigkill_of_a_busy_model_process_fails_the_request_it_held(server, http) -> None:
    pid = _pid(http)
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
    tensor = httpclient.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.zeros(2, np.float32))
    pending = client.async_infer(MISBEHAVING, [tensor], parameters={"action": "hang"})
    time.sleep(0.5)  # the request reaches the process and hangs there
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(InferenceServerException) as failure:
        pending.get_result()
    assert "signal 9 (SIGKILL)" in str(failure.value)
    assert _pid(http) != pid
    assert "SIGKILL" in _reason(http, MISBEHAVING)


@pytest.mark.parametrize(
    ("action", "says"),
    [("exit_soon", "exited with status 3"), ("hang", "execution_timeout_ms (2000 ms)")],
)
def test_batches_queued_behind_one_that_ends_its_process_run_on_the_next_process(
    server, http, caplog, action: str, says: str
) -> None:
    """Up to PIPELINE_DEPTH batches wait in the model process behind the one it runs: when
    that one ends the process (exit, or killed for its execution timeout), only it fails; the
    others never began, and run on the new process."""
    pid = _pid(http)
    client = httpclient.InferenceServerClient(server.http_url, concurrency=4, network_timeout=60)

    def send(data: np.ndarray, parameters: dict | None = None):
        tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        return client.async_infer(MISBEHAVING, [tensor], parameters=parameters)

    with caplog.at_level(logging.INFO):
        first = send(np.zeros(2, np.float32), {"action": action, "seconds": 1})
        signal_line = "exits soon" if action == "exit_soon" else "hangs now"
        assert _wait_until(lambda: f"isolated model {signal_line}" in caplog.text, 30)
        queued = [send(np.full(3, index, np.float32)) for index in range(3)]
        with pytest.raises(InferenceServerException, match=re.escape(says)):
            first.get_result()
        results = [pending.get_result() for pending in queued]
    for index, result in enumerate(results):
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full(3, index, np.float32))
        assert int(result.as_numpy("OUTPUT1")[0]) != pid  # the new process ran it
    assert len(queued) < isolated_instance.PIPELINE_DEPTH
    client.close()


def test_an_idle_model_process_killed_from_outside_is_replaced(http) -> None:
    pid = _pid(http)
    os.kill(pid, signal.SIGKILL)
    assert _wait_until(lambda: not _alive(pid))
    assert _pid(http) != pid


def test_execute_past_the_execution_timeout_kills_and_restarts_the_process(http) -> None:
    pid = _pid(http)
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as failure:
        _http_infer(http, MISBEHAVING, np.ones(2, np.float32), {"action": "hang"})
    assert time.monotonic() - started < 30
    assert "execution_timeout_ms (2000 ms)" in str(failure.value)
    assert _pid(http) != pid
    assert not _alive(pid)


def test_a_grpc_deadline_answers_the_client_of_a_slow_in_process_model(explicit) -> None:
    client = grpcclient.InferenceServerClient(explicit.grpc_url)
    config = {
        "name": "slow_in_process",
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [
            {"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]},
            {"name": "OUTPUT1", "data_type": "TYPE_INT64", "dims": [1]},
        ],
    }
    files = {"file:1/model.py": (MODELS / MISBEHAVING / "1" / "model.py").read_bytes()}
    client.load_model("slow_in_process", config=json.dumps(config), files=files)
    tensor = grpcclient.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.zeros(2, np.float32))
    started = time.monotonic()
    with pytest.raises(InferenceServerException, match="Deadline"):
        client.infer(
            "slow_in_process",
            [tensor],
            parameters={"action": "sleep", "seconds": "1.5"},
            client_timeout=0.3,
        )
    assert time.monotonic() - started < 1.2  # answered at the deadline, not when execute ended
    result = client.infer("slow_in_process", [tensor])  # served once the slow execute returned
    assert result.as_numpy("OUTPUT1")[0] == os.getpid()  # in the server's own process
    client.unload_model("slow_in_process")


def test_system_exit_in_an_isolated_execute_is_an_error_response(http) -> None:
    pid = _pid(http)
    with pytest.raises(InferenceServerException, match="SystemExit"):
        _http_infer(http, MISBEHAVING, np.ones(2, np.float32), {"action": "system_exit"})
    assert _pid(http) == pid  # the process caught it and lives on


def test_large_tensors_cross_the_boundary_intact(http) -> None:
    data = np.random.default_rng(7).standard_normal(2 * 1024 * 1024).astype(np.float32)  # 8 MiB
    for _ in range(2):  # the second pass reuses what the first one allocated
        result = _http_infer(http, MISBEHAVING, data)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("model", [MISBEHAVING, UNPOLLED])
@pytest.mark.parametrize(
    "size", [1, wire.INLINE_TENSOR_BYTES // 4 - 4, wire.INLINE_TENSOR_BYTES // 4 + 4]
)
def test_tensors_either_side_of_the_inline_limit_cross_intact_and_writable(
    http, model: str, size: int
) -> None:
    """Small messages carry their tensors in the frame, larger ones through shared memory;
    either way the model gets inputs it may change in place, polling for answers or not."""
    data = np.random.default_rng(size).standard_normal(size).astype(np.float32)
    for _ in range(3):
        result = _http_infer(http, model, data, {"action": "double_in_place"})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data * 2)


def test_bls_from_an_isolated_model_reaches_other_models(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(np.full(4, 1.5, np.float32))
    result = client.infer("isolated_bls", [tensor]).as_numpy("OUTPUT0")
    # identity_fp32(x * 2) plus the 3 responses isolated_decoupled streamed back
    np.testing.assert_array_equal(result, np.full(4, 6.0, np.float32))


def test_async_bls_from_an_isolated_model(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [3], "FP32")
    tensor.set_data_from_numpy(np.arange(3, dtype=np.float32))
    result = client.infer("isolated_bls_async", [tensor]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(result, np.arange(3, dtype=np.float32) * 3 + 3)


def test_a_decoupled_isolated_model_streams_over_grpc(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    received: list = []
    client.start_stream(callback=lambda result, error: received.append((result, error)))
    try:
        tensor = grpcclient.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([5], np.int32))
        client.async_stream_infer("isolated_decoupled", [tensor], enable_empty_final_response=True)
        assert _wait_until(
            lambda: any(
                r is not None and r.get_response().parameters["triton_final_response"].bool_param
                for r, _ in received
            )
        )
    finally:
        client.stop_stream()
    assert all(error is None for _, error in received)
    values = [int(r.as_numpy("OUT")[0]) for r, _ in received if r.as_numpy("OUT") is not None]
    assert values == [0, 1, 2, 3, 4]


def test_an_open_decoupled_request_fails_when_its_process_dies(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    received: list = []
    client.start_stream(callback=lambda result, error: received.append((result, error)))
    try:
        tensor = grpcclient.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([-1], np.int32))
        client.async_stream_infer("isolated_decoupled", [tensor])
        assert _wait_until(lambda: any(error is not None for _, error in received))
    finally:
        client.stop_stream()
    errors = [str(error) for _, error in received if error is not None]
    assert len(errors) == 1 and "exited with status 6" in errors[0]
    assert "isolated_decoupled" in errors[0]
    # the model serves again from its new process
    again = grpcclient.InferenceServerClient(server.grpc_url)
    results: list = []
    again.start_stream(callback=lambda result, error: results.append((result, error)))
    try:
        tensor = grpcclient.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([2], np.int32))
        again.async_stream_infer("isolated_decoupled", [tensor])
        assert _wait_until(lambda: len(results) >= 2)
    finally:
        again.stop_stream()
    assert all(error is None for _, error in results)


def test_log_lines_of_a_model_process_reach_the_server_log(http, caplog) -> None:
    with caplog.at_level(logging.INFO):
        _http_infer(http, MISBEHAVING, np.ones(2, np.float32), {"action": "log"})
        assert _wait_until(lambda: "isolated model says hello" in caplog.text, 10)
    record = next(r for r in caplog.records if "isolated model says hello" in r.getMessage())
    assert record.levelno == logging.WARNING and record.pathname.endswith("model.py")


# ----------------------------------------------------------------------------- load and unload


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory):
    repository = copy_models(
        tmp_path_factory.mktemp("explicit"),
        MISBEHAVING,
        "raises_base_exception",
        "exit_at_import",
        "exit_in_initialize",
        "exit_in_finalize",
        "isolated_exit_at_import",
    )
    with running_server(repository, model_control_mode="explicit") as running:
        yield running


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("exit_at_import", "SystemExit: exit at import"),
        ("exit_in_initialize", "SystemExit: 7"),
        ("isolated_exit_at_import", "exited with status 4"),
    ],
)
def test_a_model_ending_its_process_while_loading_is_a_load_failure(
    explicit, model: str, expected: str
) -> None:
    client = httpclient.InferenceServerClient(explicit.http_url, network_timeout=120)
    with pytest.raises(InferenceServerException) as failure:
        client.load_model(model)
    assert expected in str(failure.value) and model in str(failure.value)
    assert client.is_server_live()
    assert expected in _reason(client, model)


@pytest.mark.parametrize("exception", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_base_exceptions_in_an_in_process_execute_are_error_responses(
    explicit, exception: str
) -> None:
    client = httpclient.InferenceServerClient(explicit.http_url)
    client.load_model("raises_base_exception")
    data = np.arange(3, dtype=np.float32)
    with pytest.raises(InferenceServerException) as failure:
        _http_infer(client, "raises_base_exception", data, {"raise": exception})
    assert exception in str(failure.value) and "raises_base_exception" in str(failure.value)
    result = _http_infer(client, "raises_base_exception", data)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_system_exit_in_finalize_still_unloads(explicit) -> None:
    client = httpclient.InferenceServerClient(explicit.http_url)
    client.load_model("exit_in_finalize")
    _http_infer(client, "exit_in_finalize", np.ones(1, np.float32))
    client.unload_model("exit_in_finalize")
    assert _wait_until(lambda: not client.is_model_ready("exit_in_finalize"))
    assert client.is_server_live()


def test_unload_removes_the_model_process_and_its_shared_memory(explicit) -> None:
    client = httpclient.InferenceServerClient(explicit.http_url, network_timeout=120)
    before = _our_files()
    client.load_model(MISBEHAVING)
    pid = _pid(client)
    assert _alive(pid) and _our_files() - before
    client.unload_model(MISBEHAVING)
    assert _wait_until(lambda: not _alive(pid) and not _our_files() - before)


def test_an_unload_kills_a_hung_model_process_after_its_grace_period(
    explicit, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(isolated_instance, "UNLOAD_GRACE_S", 0.5)
    client = httpclient.InferenceServerClient(explicit.http_url, network_timeout=120)
    config = {
        "name": MISBEHAVING,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [
            {"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]},
            {"name": "OUTPUT1", "data_type": "TYPE_INT64", "dims": [1]},
        ],
        # no execution_timeout_ms: only the unload can stop a hung execute
        "parameters": {"isolation": {"string_value": "process"}},
    }
    client.load_model(MISBEHAVING, config=json.dumps(config))
    pid = _pid(client)

    def hang() -> str:
        # A client of its own, on a thread of its own: the unload must not wait behind it.
        hung = httpclient.InferenceServerClient(explicit.http_url, network_timeout=60)
        try:
            _http_infer(hung, MISBEHAVING, np.zeros(2, np.float32), {"action": "hang"})
        except InferenceServerException as exc:
            return str(exc)
        return "answered"

    with caplog.at_level(logging.INFO), ThreadPoolExecutor(1) as pool:
        pending = pool.submit(hang)
        # Unload only once the model is running the execute (not while the request travels).
        assert _wait_until(lambda: "isolated model hangs now" in caplog.text, 30)
        started = time.monotonic()
        client.unload_model(MISBEHAVING)
        assert "unload" in pending.result(timeout=60)
    assert _wait_until(lambda: not _alive(pid))
    assert time.monotonic() - started < 20
    assert not client.is_model_ready(MISBEHAVING)
    assert client.is_server_live()


def test_a_crash_and_a_server_stop_leave_no_process_or_file(tmp_path: Path) -> None:
    repository = copy_models(tmp_path, MISBEHAVING)
    before = _our_files()  # other servers of this test process have theirs
    with running_server(repository) as running:
        client = httpclient.InferenceServerClient(running.http_url, network_timeout=60)
        first = _pid(client)
        files_of_first = _our_files() - before
        assert files_of_first
        with pytest.raises(InferenceServerException):
            _http_infer(client, MISBEHAVING, np.ones(2, np.float32), {"action": "exit"})
        second = _pid(client)
        # The dead process's files are gone; the new one has its own.
        assert _wait_until(lambda: not files_of_first & _our_files())
        assert _our_files() - before
    assert not _alive(first) and not _alive(second)
    assert not _our_files() - before
