"""OpenAI request checking and the tensors a request becomes (no sockets, no model)."""

from __future__ import annotations

import json

import pytest

from trident.runtime.errors import InvalidArgumentError
from trident.runtime.frontends.http.openai.protocol import (
    Endpoint,
    parse_request,
    request_id_header,
    to_inference_request,
)


def _inputs(document: dict, endpoint: Endpoint) -> dict:
    request = to_inference_request(parse_request(document, endpoint), "id-1")
    values = {}
    for tensor in request.inputs:
        item = tensor.data.reshape(-1)
        values[tensor.name] = item[0] if tensor.datatype != "INT64" else list(item)
    return values


def test_a_completion_becomes_the_vllm_backend_tensors() -> None:
    values = _inputs(
        {
            "model": "m",
            "prompt": "Hello",
            "max_tokens": 5,
            "temperature": 0,
            "top_k": 3,
            "stop": ["\n"],
            "seed": 7,
        },
        Endpoint.COMPLETIONS,
    )
    assert values["text_input"] == b"Hello"
    assert not values["stream"]
    assert values["exclude_input_in_output"]  # echo defaults to false
    assert values["return_num_input_tokens"] and values["return_num_output_tokens"]
    assert not values["return_logprobs"]
    sampling = json.loads(values["sampling_parameters"])
    assert sampling == {"max_tokens": 5, "temperature": 0, "top_k": 3, "stop": ["\n"], "seed": 7}


def test_completions_default_to_16_tokens_and_chat_to_the_context() -> None:
    completion = _inputs({"model": "m", "prompt": "x"}, Endpoint.COMPLETIONS)
    assert json.loads(completion["sampling_parameters"])["max_tokens"] == 16
    chat = _inputs({"model": "m", "messages": [{"role": "user", "content": "x"}]}, Endpoint.CHAT)
    assert json.loads(chat["sampling_parameters"])["max_tokens"] is None


def test_chat_prefers_max_completion_tokens_and_sends_messages_as_json() -> None:
    messages = [{"role": "user", "content": "héllo"}]
    values = _inputs(
        {
            "model": "m",
            "messages": messages,
            "max_tokens": 3,
            "max_completion_tokens": 9,
            "logprobs": True,
            "top_logprobs": 2,
        },
        Endpoint.CHAT,
    )
    assert json.loads(values["messages"].decode()) == messages
    sampling = json.loads(values["sampling_parameters"])
    assert sampling["max_tokens"] == 9
    assert sampling["logprobs"] == 2
    assert values["return_logprobs"]


def test_token_id_prompts_become_input_ids() -> None:
    values = _inputs({"model": "m", "prompt": [[5, 6, 7]]}, Endpoint.COMPLETIONS)
    assert values["input_ids"] == [5, 6, 7]
    assert "text_input" not in values


def test_stream_options_are_read() -> None:
    request = parse_request(
        {"model": "m", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}},
        Endpoint.COMPLETIONS,
    )
    assert request.stream and request.include_usage and not request.continuous_usage


@pytest.mark.parametrize(
    ("document", "endpoint", "message"),
    [
        ({"model": "m", "prompt": "x", "bogus": 1}, Endpoint.COMPLETIONS, "unknown field 'bogus'"),
        ({"model": "m", "prompt": "x", "n": 2}, Endpoint.COMPLETIONS, "only n = 1"),
        ({"model": "m", "prompt": "x", "max_tokens": -1}, Endpoint.COMPLETIONS, "max_tokens"),
        ({"model": "m", "prompt": "x", "max_tokens": "5"}, Endpoint.COMPLETIONS, "max_tokens"),
        ({"model": "m", "prompt": ["a", "b"]}, Endpoint.COMPLETIONS, "one prompt per request"),
        ({"model": "m", "prompt": ""}, Endpoint.COMPLETIONS, "must not be empty"),
        ({"model": "m", "prompt": 5}, Endpoint.COMPLETIONS, "'prompt'"),
        ({"prompt": "x"}, Endpoint.COMPLETIONS, "'model'"),
        ({"model": "m", "prompt": "x", "logprobs": 9}, Endpoint.COMPLETIONS, "'logprobs'"),
        ({"model": "m", "prompt": "x", "echo": True, "logprobs": 1}, Endpoint.COMPLETIONS, "echo"),
        (
            {"model": "m", "prompt": "x", "stream_options": {"include_usage": True}},
            Endpoint.COMPLETIONS,
            "only allowed with stream",
        ),
        ({"model": "m", "prompt": "x", "stream": "yes"}, Endpoint.COMPLETIONS, "'stream'"),
        ({"model": "m", "prompt": "x", "suffix": "s"}, Endpoint.COMPLETIONS, "suffix"),
        ({"model": "m", "messages": []}, Endpoint.CHAT, "'messages'"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            Endpoint.CHAT,
            "tool",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            Endpoint.CHAT,
            "needs 'logprobs'",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "prompt": "x"},
            Endpoint.CHAT,
            "unknown field 'prompt'",
        ),
        ([1, 2], Endpoint.CHAT, "JSON object"),
    ],
)
def test_bad_requests_name_the_field(document, endpoint: Endpoint, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_request(document, endpoint)


def test_request_id_header_is_used_only_when_short_and_printable() -> None:
    assert request_id_header("abc-123") == "abc-123"
    assert request_id_header("x" * 500) is None
    assert request_id_header("bad\nid") is None
    assert request_id_header(None) is None
