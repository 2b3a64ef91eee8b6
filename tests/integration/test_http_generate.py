"""The generate extension: /generate (one response) and /generate_stream (server-sent events),
with JSON fields mapped to model inputs by name."""

from __future__ import annotations

import json

import pytest

from tests.helpers import copy_models, running_server

from .http_support import post_json, request, sse_events


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("http_generate_repo")
    copy_models(repository, "upper", "words")
    with running_server(repository, allow_grpc=False) as running:
        yield running


def test_generate_maps_fields_to_inputs_and_parameters(server):
    status, document = post_json(
        server.http_url,
        "/v2/models/upper/generate",
        {"id": "g7", "text_input": "hi", "repeat": 2, "parameters": {"temperature": 0.5, "k": 1}},
    )
    assert status == 200, document
    assert document == {
        "id": "g7",
        "lengths": [4, 2],
        "model_name": "upper",
        "model_version": "1",
        "text_output": "HIHI",
    }


def test_generate_stream_sends_one_event_per_response(server):
    status, headers, body = request(
        server.http_url,
        "POST",
        "/v2/models/words/generate_stream",
        {"text_input": "the quick fox"},
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert sse_events(body) == [
        {"model_name": "words", "model_version": "1", "text_output": word}
        for word in ("the", "quick", "fox")
    ]


def test_generate_stream_reports_a_mid_stream_error_as_an_event(server):
    status, _, body = request(
        server.http_url,
        "POST",
        "/v2/models/words/generate_stream",
        {"text_input": "one fail two"},
    )
    assert status == 200
    assert sse_events(body) == [
        {"model_name": "words", "model_version": "1", "text_output": "one"},
        {"error": "the model refused 'fail'"},
    ]
    # An error before any response is an ordinary HTTP error.
    status, _, body = request(
        server.http_url, "POST", "/v2/models/words/generate_stream", {"text_input": "fail"}
    )
    assert (status, json.loads(body)) == (500, {"error": "the model refused 'fail'"})


def test_generate_errors(server):
    status, document = post_json(
        server.http_url, "/v2/models/words/generate", {"text_input": "several words here"}
    )
    assert status == 400 and "exactly 1 response" in document["error"]
    status, document = post_json(server.http_url, "/v2/models/nosuch/generate", {"a": 1})
    assert status == 404
    status, document = post_json(server.http_url, "/v2/models/upper/generate", {"text_input": 5})
    assert status == 400 and "strings" in document["error"]
    status, _, body = request(server.http_url, "POST", "/v2/models/upper/generate", b"{oops")
    assert status == 400 and "JSON" in json.loads(body)["error"]
    status, document = post_json(server.http_url, "/v2/models/upper/generate", {"k": 1})
    assert status == 400 and "text_input" in document["error"]
