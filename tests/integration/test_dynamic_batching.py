"""Dynamic batching through the real server, driven by tritonclient (gRPC and HTTP)."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import model_source, running_server, write_model

#: tests/models/recorder (what it records is told there), served under each test's batching.
RECORDER_PY = model_source("recorder")


def _recorder(repository: Path, name: str, batching: str, max_batch_size: int = 8) -> None:
    config = f"""
    name: "{name}"
    backend: "python"
    max_batch_size: {max_batch_size}
    input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
    output [
      {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
      {{ name: "BATCH" data_type: TYPE_INT32 dims: [ 1 ] }},
      {{ name: "CALL" data_type: TYPE_INT32 dims: [ 1 ] }}
    ]
    instance_group [ {{ kind: KIND_CPU count: 1 }} ]
    dynamic_batching {{ {batching} }}
    """
    write_model(repository, name, RECORDER_PY, config)


def _inputs(module, value: float, rows: int = 1):
    tensor = module.InferInput("INPUT0", [rows, 4], "FP32")
    tensor.set_data_from_numpy(np.full((rows, 4), value, np.float32))
    return [tensor]


def _async_grpc(client: grpcclient.InferenceServerClient, model: str, values, **kwargs):
    """Send one request per value at once (async_infer); return results or errors in order."""
    results: list[queue.Queue] = []
    for value in values:
        slot: queue.Queue = queue.Queue()
        client.async_infer(
            model,
            _inputs(grpcclient, value),
            callback=lambda result, error, slot=slot: slot.put((result, error)),
            **kwargs,
        )
        results.append(slot)
    return [slot.get(timeout=30) for slot in results]


def _stats_json(http_url: str, model: str) -> dict:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as r:
        return json.loads(r.read())["model_stats"][0]


def _metrics(metrics_url: str) -> str:
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=10) as response:
        return response.read().decode()


def test_concurrent_requests_share_batches_at_the_preferred_size(tmp_path: Path) -> None:
    _recorder(
        tmp_path, "recorder", "preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 5000000"
    )
    with running_server(tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        answers = _async_grpc(client, "recorder", [float(i) for i in range(8)])
        assert all(error is None for _, error in answers)
        for index, (result, _) in enumerate(answers):
            assert result.as_numpy("OUTPUT0")[0, 0] == index
            assert result.as_numpy("BATCH")[0, 0] == 4  # well before the 5 s delay ran out
        calls = {int(result.as_numpy("CALL")[0, 0]) for result, _ in answers}
        assert calls == {0, 1}

        stats = _stats_json(server.http_url, "recorder")
        assert stats["inference_count"] == 8 and stats["execution_count"] == 2
        assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stats["batch_stats"]] == [
            (4, 2)
        ]
        assert stats["batch_close_reasons"]["preferred_size"] == 2
        assert stats["batch_close_reasons"]["queue_delay"] == 0
        metrics = _metrics(server.metrics_url)
        assert (
            'trident_batch_close_total{model="recorder",reason="preferred_size",version="1"} 2'
            in metrics
        )
        # gRPC statistics stay Triton's message (no extra field), and tritonclient reads them.
        grpc_stats = client.get_inference_statistics("recorder", as_json=True)
        assert "batch_close_reasons" not in grpc_stats["model_stats"][0]
        assert grpc_stats["model_stats"][0]["execution_count"] == "2"
        # tritonclient's HTTP client accepts the extra key.
        http_stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics(
            "recorder"
        )
        assert http_stats["model_stats"][0]["batch_close_reasons"]["preferred_size"] == 2
        client.close()


def test_the_delay_closes_a_partial_batch_and_batches_never_exceed_max(tmp_path: Path) -> None:
    _recorder(tmp_path, "recorder", "max_queue_delay_microseconds: 300000")
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url, concurrency=6)
        # Six requests of three rows each: at most two fit in max_batch_size 8.
        pending = [client.async_infer("recorder", _inputs(httpclient, i, rows=3)) for i in range(6)]
        results = [p.get_result() for p in pending]
        sizes = [int(r.as_numpy("BATCH")[0, 0]) for r in results]
        assert max(sizes) <= 8
        assert sizes.count(6) >= 4  # most ran two to a batch
        # One request alone: nothing else comes, the 300 ms delay closes its batch.
        alone = client.infer("recorder", _inputs(httpclient, 1.0))
        assert alone.as_numpy("BATCH")[0, 0] == 1
        reasons = _stats_json(server.http_url, "recorder")["batch_close_reasons"]
        assert reasons["queue_delay"] >= 1
        assert reasons["max_batch_size"] >= 1
        client.close()


def test_a_full_queue_answers_unavailable_at_once(tmp_path: Path) -> None:
    _recorder(tmp_path, "recorder", "default_queue_policy { max_queue_size: 1 }")
    with running_server(tmp_path) as server:
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        http = httpclient.InferenceServerClient(server.http_url)
        answers: list[queue.Queue] = [queue.Queue(), queue.Queue()]
        for value, answer in zip((-1.0, 2.0), answers):  # -1: holds the instance for 1 s
            grpc.async_infer(
                "recorder",
                _inputs(grpcclient, value),
                callback=lambda result, error, answer=answer: answer.put((result, error)),
            )
            if value < 0:
                _wait_until_running(tmp_path)
        _wait_for(lambda: _pending(server) == 1)
        with pytest.raises(InferenceServerException) as grpc_error:
            grpc.infer("recorder", _inputs(grpcclient, 3.0))
        assert grpc_error.value.status() == "StatusCode.UNAVAILABLE"
        assert "max_queue_size" in grpc_error.value.message()
        with pytest.raises(InferenceServerException) as http_error:
            http.infer("recorder", _inputs(httpclient, 4.0))
        assert http_error.value.status() == "503"
        for value, answer in zip((-1.0, 2.0), answers):
            result, error = answer.get(timeout=30)
            assert error is None and result.as_numpy("OUTPUT0")[0, 0] == value
        failures = _metrics(server.metrics_url)
        assert 'nv_inference_request_failure{model="recorder",reason="REJECTED",version="1"} 2' in (
            failures
        )
        grpc.close()
        http.close()


def test_priority_levels_and_request_timeouts(tmp_path: Path) -> None:
    _recorder(
        tmp_path,
        "prioritized",
        "priority_levels: 2 default_priority_level: 2 "
        "default_queue_policy { allow_timeout_override: true }",
        max_batch_size=1,
    )
    with running_server(tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        order: list[float] = []
        lock = threading.Lock()
        done = threading.Semaphore(0)

        def record(result, error):
            with lock:
                order.append(error if error else float(result.as_numpy("OUTPUT0")[0, 0]))
            done.release()

        client.async_infer("prioritized", _inputs(grpcclient, -0.5), callback=record)
        _wait_until_running(tmp_path, "prioritized")
        for value, priority in ((1.0, 0), (2.0, 2), (3.0, 1)):
            client.async_infer(
                "prioritized", _inputs(grpcclient, value), callback=record, priority=priority
            )
        # In the queue for at most 50 ms while the instance is busy for 500 ms: rejected.
        with pytest.raises(InferenceServerException) as timed_out:
            client.infer("prioritized", _inputs(grpcclient, 4.0), timeout=50_000)
        assert timed_out.value.status() == "StatusCode.UNAVAILABLE"
        assert "timed out" in timed_out.value.message()
        for _ in range(4):
            assert done.acquire(timeout=30)
        assert order == [-0.5, 3.0, 1.0, 2.0]  # priority 1 first, then arrival order
        client.close()


def _wait_for(condition, timeout: float = 10.0) -> None:
    """Poll `condition` until it holds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def _wait_until_running(repository: Path, model: str = "recorder") -> None:
    """Until the model's instance started a pausing execute call (it holds the instance)."""
    _wait_for((repository / model / "running").exists)


def _pending(server, model: str = "recorder") -> int:
    return server.server.models.get(model).stats.pending


def test_a_bad_dynamic_batching_config_fails_the_load_with_its_reason(tmp_path: Path) -> None:
    _recorder(tmp_path, "bad", "preferred_batch_size: [ 16 ]")
    _recorder(tmp_path, "good", "")
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        index = {entry["name"]: entry for entry in client.get_model_repository_index()}
        assert index["bad"]["state"] == "UNAVAILABLE"
        assert "preferred_batch_size 16" in index["bad"]["reason"]
        assert index["good"]["state"] == "READY"
        client.close()
