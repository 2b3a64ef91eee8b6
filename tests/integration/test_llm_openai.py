"""The OpenAI-compatible routes, driven by the official `openai` client, on a tiny random Llama
served by the real engine (built in the test, no downloads)."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("transformers")

from tests.helpers import running_server  # noqa: E402
from tests.llm_models import build_tiny_llama, llm_engine, write_llm_model  # noqa: E402

from .http_support import request  # noqa: E402

MODEL = "tiny"
#: Greedy, fixed length (random weights would otherwise stop at a random EOS).
GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("llm_openai_weights"))


@pytest.fixture(scope="module")
def tokenizer(weights):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(weights))


@pytest.fixture(scope="module")
def server(tmp_path_factory, weights):
    root = tmp_path_factory.mktemp("llm_openai")
    write_llm_model(
        root / "repo",
        MODEL,
        {"model": str(weights), "num_blocks": 128, "block_size": 4, "max_num_seqs": 8},
    )
    with running_server(root / "repo") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused") as c:
        yield c


def test_models_lists_the_llm_models(client) -> None:
    assert [model.id for model in client.models.list()] == [MODEL]


def test_completion_with_usage(client) -> None:
    completion = client.completions.create(
        model=MODEL, prompt="Hello world", max_tokens=6, **GREEDY
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 6
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6
    assert completion.id.startswith("cmpl-")
    assert completion.model == MODEL


def test_a_prompt_of_token_ids_is_the_same_prompt(client, tokenizer) -> None:
    text = client.completions.create(model=MODEL, prompt="Hello world", max_tokens=5, **GREEDY)
    ids = tokenizer("Hello world")["input_ids"]
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=5, **GREEDY)
    assert by_ids.choices[0].text == text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids) == text.usage.prompt_tokens


def test_streamed_completion_equals_the_whole_one_and_ends_with_usage(client) -> None:
    whole = client.completions.create(model=MODEL, prompt="The quick", max_tokens=8, **GREEDY)
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="The quick",
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    text_chunks = [chunk for chunk in chunks if chunk.choices]
    assert "".join(chunk.choices[0].text for chunk in text_chunks) == whole.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert all(chunk.choices[0].finish_reason is None for chunk in text_chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat_whole_and_streamed_agree(client) -> None:
    messages = [{"role": "user", "content": "Count: one two"}]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, max_completion_tokens=7, **GREEDY
    )
    message = whole.choices[0].message
    assert message.role == "assistant"
    assert whole.usage.completion_tokens == 7
    assert whole.object == "chat.completion"
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == message.content
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_stop_strings_end_the_text_before_them(client) -> None:
    full = client.completions.create(model=MODEL, prompt="Hello", max_tokens=12, **GREEDY)
    text = full.choices[0].text
    # A stop string from the middle of what greedy decoding produces.
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    if len(stop) < 2 or not stop.strip():
        pytest.skip(f"greedy text {text!r} has no usable stop string")
    stopped = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=12, stop=[stop], **GREEDY
    )
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=12, stop=stop, stream=True, **GREEDY
    )
    assert "".join(c.choices[0].text for c in streamed) == text[: text.index(stop)]


def test_seed_makes_sampling_repeatable(client) -> None:
    def sample() -> str:
        return (
            client.completions.create(
                model=MODEL,
                prompt="Once",
                max_tokens=10,
                temperature=1.0,
                seed=1234,
                extra_body={"ignore_eos": True, "top_k": 50},
            )
            .choices[0]
            .text
        )

    assert sample() == sample()


def test_logprobs_of_completions_and_chat(client) -> None:
    completion = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=4, logprobs=2, **GREEDY
    )
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == 4 == len(logprobs.token_logprobs)
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    # Greedy: the sampled token is the most likely one.
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert token in top
        assert logprob <= 0 and max(top.values()) == pytest.approx(logprob, abs=1e-4)
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
        logprobs=True,
        top_logprobs=3,
        **GREEDY,
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == 3 and all(len(entry.top_logprobs) == 3 for entry in content)


def test_echo_returns_the_prompt_first(client) -> None:
    completion = client.completions.create(
        model=MODEL, prompt="Hello world", max_tokens=3, echo=True, **GREEDY
    )
    assert completion.choices[0].text.startswith("Hello world")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n": 2}, "only n = 1"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"extra_body": {"temperature": -1}}, "temperature"),
        ({"extra_body": {"no_such_field": 1}}, "unknown field 'no_such_field'"),
        ({"prompt": "word " * 2000}, "cannot fit|context|too long"),
    ],
)
def test_bad_requests_are_400s_with_openai_error_bodies(client, arguments, message) -> None:
    arguments = {"model": MODEL, "prompt": "Hi", "max_tokens": 2, **arguments}
    with pytest.raises(openai.BadRequestError, match=message) as caught:
        client.completions.create(**arguments)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "invalid_request_error"


def test_unknown_model_is_404(client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="Hi", max_tokens=2)


def test_malformed_json_is_a_400_with_an_openai_error(server) -> None:
    status, _, body = request(
        server.http_url,
        "POST",
        "/v1/chat/completions",
        b'{"model": "tiny", "messages": [',
        {"Content-Type": "application/json"},
    )
    assert status == 400
    error = json.loads(body)["error"]
    assert "JSON" in error["message"] and error["type"] == "invalid_request_error"
    deep = b'{"model": "tiny", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, _, body = request(server.http_url, "POST", "/v1/chat/completions", deep)
    assert status == 400 and "deep" in json.loads(body)["error"]["message"].lower()


def test_engine_is_idle_and_every_block_free_after_the_tests(server, client) -> None:
    client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, **GREEDY)
    stats = llm_engine(server, MODEL).stats()
    assert (stats.num_running, stats.num_waiting, stats.kv_blocks_used) == (0, 0, 0)
