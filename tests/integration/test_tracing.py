"""The trace file through the real server: settings from --trace-config and tritonclient's
update_trace_settings, inferences over HTTP and gRPC, then the file read back as Triton's trace
tooling reads it (records grouped by id; each trace's stages in order)."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import copy_models, running_server

CORE_STAGES = [
    "REQUEST_START",
    "QUEUE_START",
    "COMPUTE_START",
    "COMPUTE_INPUT_END",
    "COMPUTE_OUTPUT_START",
    "COMPUTE_END",
    "REQUEST_END",
]
HTTP_STAGES = ["HTTP_RECV_START", "HTTP_RECV_END", *CORE_STAGES, "HTTP_SEND_START", "HTTP_SEND_END"]
GRPC_STAGES = [
    "GRPC_WAITREAD_START",
    "GRPC_WAITREAD_END",
    *CORE_STAGES,
    "GRPC_SEND_START",
    "GRPC_SEND_END",
]


@pytest.fixture
def repository(tmp_path):
    return copy_models(tmp_path / "models", "echo_fp32", "echo_twice", "raises")


def _traced_server(repository: Path, trace_file: Path, *extra: str):
    config = [f"triton,file={trace_file}", "level=TIMESTAMPS", "rate=1", *extra]
    return running_server(repository, trace_config=config)


def _infer(client, model: str = "echo_fp32", request_id: str = "") -> None:
    module = httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient
    tensor = module.InferInput("INPUT0", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.array([[1.5, -2.0]], dtype=np.float32))
    client.infer(model, [tensor], request_id=request_id)


def _traces(path: Path) -> dict[int, dict]:
    """The file's records grouped by trace id, as Triton's trace_summary.py groups them."""
    traces: dict[int, dict] = {}
    for record in json.loads(path.read_text()):
        trace = traces.setdefault(record["id"], {"timestamps": {}, "tensors": []})
        if "model_name" in record:
            trace["model_name"] = record["model_name"]
            trace["model_version"] = record["model_version"]
            trace["request_id"] = record.get("request_id")
        for stamp in record.get("timestamps", []):
            trace["timestamps"][stamp["name"]] = stamp["ns"]
        if "activity" in record:
            trace["tensors"].append((record["activity"], record["tensor"]))
    return traces


def _in_order(trace: dict, stages: list[str]) -> bool:
    times = [trace["timestamps"][name] for name in stages]
    return times == sorted(times)


def test_http_and_grpc_requests_are_traced_with_their_stages(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    with _traced_server(repository, trace_file) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        _infer(http, request_id="from-http")
        _infer(grpc, request_id="from-grpc")
        http.close()
        grpc.close()
        traces = _traces(trace_file)  # valid JSON while the server runs
    assert len(traces) == 2
    by_request = {t["request_id"]: t for t in traces.values()}
    http_trace, grpc_trace = by_request["from-http"], by_request["from-grpc"]
    for trace, stages in ((http_trace, HTTP_STAGES), (grpc_trace, GRPC_STAGES)):
        assert (trace["model_name"], trace["model_version"]) == ("echo_fp32", 1)
        assert set(trace["timestamps"]) == set(stages)
        assert _in_order(trace, stages)
        assert trace["tensors"] == []  # TIMESTAMPS only
    assert _traces(trace_file) == traces  # the server's stop leaves the file as it was


def test_rate_traces_one_request_in_n_and_count_stops_tracing(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    with _traced_server(repository, trace_file) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        client.update_trace_settings(settings={"trace_rate": "3", "trace_count": "2"})
        for _ in range(9):
            _infer(client)
        # Requests 3 and 6 are traced; then the count is spent.
        assert client.get_trace_settings()["trace_count"] == "0"
        client.close()
    assert len(_traces(trace_file)) == 2


def test_log_frequency_writes_numbered_files(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    with _traced_server(repository, trace_file, "triton,log-frequency=2") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for _ in range(5):
            _infer(client)
        assert sorted(p.name for p in tmp_path.glob("trace.json*")) == [
            "trace.json.0",
            "trace.json.1",
        ]
        client.close()
    # The fifth trace is written when the server stops; nothing goes to trace.json itself.
    counts = [len(_traces(tmp_path / f"trace.json.{n}")) for n in range(3)]
    assert counts == [2, 2, 1]
    assert not trace_file.exists()


def test_tensors_level_records_the_tensors(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    with _traced_server(repository, trace_file, "level=TENSORS") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        _infer(client)
        client.close()
    (trace,) = _traces(trace_file).values()
    activities = [activity for activity, _ in trace["tensors"]]
    assert activities == ["TENSOR_QUEUE_INPUT", "TENSOR_BACKEND_INPUT", "TENSOR_BACKEND_OUTPUT"]
    for _, tensor in trace["tensors"]:
        assert tensor["data"] == "1.5,-2" and tensor["shape"] == "1,2"
        assert tensor["dtype"] == "FP32"
    assert set(trace["timestamps"]) == set(HTTP_STAGES)


def test_a_model_can_be_left_out_and_failed_requests_are_traced(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    with _traced_server(repository, trace_file) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        client.update_trace_settings(model_name="echo_fp32", settings={"trace_level": ["OFF"]})
        _infer(client)
        with pytest.raises(InferenceServerException):
            _infer(client, "raises")
        client.close()
    (trace,) = _traces(trace_file).values()
    assert trace["model_name"] == "raises"
    # The model raised: no compute stages, but the request's own start and end are there.
    assert {"HTTP_RECV_START", "REQUEST_START", "QUEUE_START", "REQUEST_END"} <= set(
        trace["timestamps"]
    )


def test_tracing_off_writes_nothing(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    with _traced_server(repository, trace_file, "level=OFF") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        _infer(client)
        assert client.get_trace_settings(as_json=True)["settings"]["trace_level"]["value"] == [
            "OFF"
        ]
        client.close()
    assert not list(tmp_path.glob("trace.json*"))


def test_grpc_stream_requests_are_traced(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    with _traced_server(repository, trace_file) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        results: list = []
        client.start_stream(callback=lambda result, error: results.append((result, error)))
        tensor = grpcclient.InferInput("INPUT0", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
        for index in range(2):
            client.async_stream_infer("echo_fp32", [tensor], request_id=f"s{index}")
        client.stop_stream()  # waits for the responses
        client.close()
        assert [error for _, error in results] == [None, None]
    traces = _traces(trace_file)
    assert sorted(t["request_id"] for t in traces.values()) == ["s0", "s1"]
    for trace in traces.values():
        assert set(trace["timestamps"]) == set(GRPC_STAGES)
        assert _in_order(trace, GRPC_STAGES)


def test_an_ensemble_is_traced_with_its_steps_as_children(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    with _traced_server(repository, trace_file) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("IN", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
        client.infer("echo_twice", [tensor])
        client.close()
    records = json.loads(trace_file.read_text())
    parents = {r["id"]: r.get("parent_id") for r in records if "model_name" in r}
    traces = _traces(trace_file)
    (root,) = [i for i, parent in parents.items() if parent is None]
    steps = [i for i, parent in parents.items() if parent == root]
    assert traces[root]["model_name"] == "echo_twice" and len(steps) == 2
    # The ensemble has no compute of its own (as in Triton); each step has all of its stages.
    assert "COMPUTE_START" not in traces[root]["timestamps"]
    assert set(traces[root]["timestamps"]) == {
        "GRPC_WAITREAD_START",
        "GRPC_WAITREAD_END",
        "REQUEST_START",
        "QUEUE_START",
        "REQUEST_END",
        "GRPC_SEND_START",
        "GRPC_SEND_END",
    }
    for step in steps:
        assert traces[step]["model_name"] == "echo_fp32"
        assert set(traces[step]["timestamps"]) == set(CORE_STAGES)
        assert _in_order(traces[step], CORE_STAGES)
        assert (
            traces[root]["timestamps"]["QUEUE_START"]
            <= (traces[step]["timestamps"]["REQUEST_START"])
        )


def test_generate_and_event_stream_requests_are_traced(repository, tmp_path):
    trace_file = tmp_path / "trace.json"
    infer_body = {
        "inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]
    }
    with _traced_server(repository, trace_file) as server:
        host, port = server.http_url.rsplit(":", 1)
        for path, body, headers in (
            ("/v2/models/echo_fp32/generate", {"id": "gen", "INPUT0": [1.0, 2.0]}, {}),
            (
                "/v2/models/echo_fp32/infer",
                {**infer_body, "id": "sse"},
                {"Accept": "text/event-stream"},
            ),
        ):
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                connection.request("POST", path, body=json.dumps(body), headers=headers)
                response = connection.getresponse()
                assert response.status == 200, response.read()
                response.read()
            finally:
                connection.close()
    traces = {t["request_id"]: t for t in _traces(trace_file).values()}
    assert set(traces) == {"gen", "sse"}
    for trace in traces.values():
        assert set(trace["timestamps"]) == set(HTTP_STAGES)
        assert _in_order(trace, HTTP_STAGES)
