"""An llm model through Triton's surfaces: /generate, /generate_stream, gRPC ModelStreamInfer
(one response per delta), unary gRPC ModelInfer and HTTP /infer (one aggregated response), with
the vLLM backend's tensor names; statistics count requests, metrics count requests and tokens."""

from __future__ import annotations

import json
import queue

import numpy as np
import pytest

pytest.importorskip("transformers")

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.helpers import running_server
from tests.llm_models import (
    build_tiny_llama,
    llm_engine,
    metric_values,
    write_llm_model,
)

from .http_support import get_json, post_json, request, sse_events

MODEL = "tiny"
SAMPLING = {"temperature": 0, "max_tokens": 6, "ignore_eos": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_generate")
    weights = build_tiny_llama(root / "weights")
    # Engine settings from config.pbtxt parameters and model.json together.
    config = f"""
    name: "{MODEL}"
    backend: "llm"
    parameters {{ key: "max_num_seqs" value: {{ string_value: "4" }} }}
    parameters {{ key: "block_size" value: {{ string_value: "4" }} }}
    """
    write_llm_model(root / "repo", MODEL, {"model": str(weights), "num_blocks": 96}, config)
    with running_server(root / "repo") as running:
        yield running


def _inputs(prompt: str, stream: bool, **flags: bool) -> list[grpcclient.InferInput]:
    def tensor(name: str, datatype: str, value: object) -> grpcclient.InferInput:
        item = grpcclient.InferInput(name, [1], datatype)
        dtype = np.object_ if datatype == "BYTES" else np.bool_
        item.set_data_from_numpy(np.array([value], dtype=dtype))
        return item

    inputs = [
        tensor("text_input", "BYTES", prompt.encode()),
        tensor("stream", "BOOL", stream),
        tensor("sampling_parameters", "BYTES", json.dumps(SAMPLING).encode()),
    ]
    inputs += [tensor(name, "BOOL", value) for name, value in flags.items()]
    return inputs


def _generate(server, prompt: str = "Hello", **fields) -> dict:
    status, body = post_json(
        server.http_url,
        f"/v2/models/{MODEL}/generate",
        {"text_input": prompt, "sampling_parameters": json.dumps(SAMPLING), **fields},
    )
    assert status == 200, body
    return body


def test_config_is_completed_with_the_vllm_backend_schema(server) -> None:
    status, config = get_json(server.http_url, f"/v2/models/{MODEL}/config")
    assert status == 200
    assert config["model_transaction_policy"]["decoupled"] is True
    names = {tensor["name"] for tensor in config["input"]}
    assert {"text_input", "stream", "sampling_parameters", "exclude_input_in_output"} <= names
    assert {tensor["name"] for tensor in config["output"]} >= {"text_output", "finish_reason"}


def test_generate_echoes_the_prompt_unless_excluded(server) -> None:
    echoed = _generate(server)
    assert echoed["model_name"] == MODEL
    assert echoed["text_output"].startswith("Hello")
    new = _generate(
        server,
        exclude_input_in_output=True,
        return_finish_reason=True,
        return_num_output_tokens=True,
    )
    assert "Hello" + new["text_output"] == echoed["text_output"]
    assert new["finish_reason"] == "length"
    assert new["num_output_tokens"] == SAMPLING["max_tokens"]


def test_generate_takes_sampling_fields_as_request_parameters_too(server) -> None:
    status, body = post_json(
        server.http_url,
        f"/v2/models/{MODEL}/generate",
        {
            "text_input": "Hello",
            "max_tokens": 3,
            "temperature": 0,
            "ignore_eos": True,
            "return_num_output_tokens": True,
        },
    )
    assert status == 200, body
    assert body["num_output_tokens"] == 3


def test_generate_stream_sends_one_event_per_delta(server) -> None:
    whole = _generate(server, exclude_input_in_output=True)["text_output"]
    status, headers, body = request(
        server.http_url,
        "POST",
        f"/v2/models/{MODEL}/generate_stream",
        {
            "text_input": "Hello",
            "stream": True,
            "sampling_parameters": json.dumps(SAMPLING),
            "return_finish_reason": True,
        },
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(body)
    assert len(events) > 1
    assert "".join(event["text_output"] for event in events) == whole
    assert [event["finish_reason"] for event in events][-1] == "length"
    assert all(event["finish_reason"] == "" for event in events[:-1])


def test_grpc_stream_sends_each_delta_then_a_final_flag(server) -> None:
    whole = _generate(server, exclude_input_in_output=True)["text_output"]
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer(
            MODEL, _inputs("Hello", True, return_num_output_tokens=True), request_id="r1"
        )
        texts, counts = [], []
        while True:
            result, error = results.get(timeout=60)
            assert error is None, error
            response = result.get_response()
            texts.append(result.as_numpy("text_output")[0].decode())
            counts.append(int(result.as_numpy("num_output_tokens")[0]))
            assert response.id == "r1"
            if response.parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    assert len(texts) > 1
    assert "".join(texts) == whole
    assert sum(counts) == SAMPLING["max_tokens"]


def test_unary_grpc_and_http_infer_get_one_aggregated_response(server) -> None:
    whole = _generate(server)["text_output"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        result = client.infer(MODEL, _inputs("Hello", False, return_finish_reason=True))
    finally:
        client.close()
    assert result.as_numpy("text_output")[0].decode() == whole
    assert result.as_numpy("finish_reason")[0] == b"length"
    http = httpclient.InferenceServerClient(server.http_url)
    try:
        text = httpclient.InferInput("text_input", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"Hello"], dtype=np.object_))
        params = httpclient.InferInput("sampling_parameters", [1], "BYTES")
        params.set_data_from_numpy(np.array([json.dumps(SAMPLING).encode()], dtype=np.object_))
        result = http.infer(MODEL, [text, params])
    finally:
        http.close()
    assert result.as_numpy("text_output")[0].decode() == whole


def test_unary_call_asking_to_stream_is_refused(server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(Exception, match="exactly one"):
            client.infer(MODEL, _inputs("Hello", True))
    finally:
        client.close()


def test_statistics_count_requests_and_metrics_count_tokens(server) -> None:
    def stats() -> dict:
        status, body = get_json(server.http_url, f"/v2/models/{MODEL}/stats")
        assert status == 200
        return body["model_stats"][0]

    def metrics() -> dict[str, float]:
        status, _, body = request(server.metrics_url, "GET", "/metrics")
        assert status == 200
        return metric_values(body.decode())

    labels = f'model="{MODEL}",version="1"'
    before_stats, before = stats(), metrics()
    prompts = ["Hello", "The quick brown fox", "Once upon a time"]
    outputs = [
        _generate(
            server,
            prompt,
            exclude_input_in_output=True,
            return_num_input_tokens=True,
            return_num_output_tokens=True,
        )
        for prompt in prompts
    ]
    # One streamed request: many responses, still one inference.
    request(
        server.http_url,
        "POST",
        f"/v2/models/{MODEL}/generate_stream",
        {"text_input": "Hi", "stream": True, "sampling_parameters": json.dumps(SAMPLING)},
    )
    after_stats, after = stats(), metrics()
    assert after_stats["inference_count"] - before_stats["inference_count"] == 4
    assert after_stats["execution_count"] - before_stats["execution_count"] == 4
    assert (
        after_stats["inference_stats"]["success"]["count"]
        - before_stats["inference_stats"]["success"]["count"]
    ) == 4

    def delta(name: str) -> float:
        return after[f"{name}{{{labels}}}"] - before[f"{name}{{{labels}}}"]

    generated = sum(output["num_output_tokens"] for output in outputs) + SAMPLING["max_tokens"]
    assert delta("vllm:generation_tokens_total") == generated
    prompt_tokens = sum(output["num_input_tokens"] for output in outputs)
    assert delta("vllm:prompt_tokens_total") >= prompt_tokens  # plus the streamed prompt
    finished = f'vllm:request_success_total{{{labels},finished_reason="length"}}'
    assert after[finished] - before[finished] == 4
    assert delta("vllm:e2e_request_latency_seconds_count") == 4
    assert delta("vllm:time_to_first_token_seconds_count") == 4
    assert delta("vllm:inter_token_latency_seconds_count") == 4 * (SAMPLING["max_tokens"] - 1)
    assert after[f"vllm:num_requests_running{{{labels}}}"] == 0
    assert after[f"vllm:kv_cache_usage_perc{{{labels}}}"] == 0
    # Trident's own per-model metrics count requests the same way.
    nv_success = f"nv_inference_request_success{{{labels}}}"
    nv = metric_values(request(server.metrics_url, "GET", "/metrics")[2].decode(), "nv_")
    assert nv[nv_success] >= 4


def test_engine_has_nothing_left_after_the_tests(server) -> None:
    stats = llm_engine(server, MODEL).stats()
    assert (stats.num_running, stats.num_waiting, stats.kv_blocks_used) == (0, 0, 0)
