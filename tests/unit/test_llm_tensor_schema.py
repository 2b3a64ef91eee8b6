"""The llm model's tensor schema: config completion, request decoding, response tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from tests.llm_models import build_tokenizer
from trident.backends.llm.engine import TokenLogprob, TopLogprob
from trident.backends.llm.tensor_schema import (
    OUTPUTS,
    PromptRenderer,
    ReturnOptions,
    complete_config,
    decode_request,
    response_tensors,
    sampling_params,
)
from trident.runtime.core.in_flight import InFlightRequest, validated
from trident.runtime.errors import InvalidArgumentError, ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest, RequestedOutput, Tensor


@pytest.fixture(scope="module")
def renderer(tmp_path_factory) -> PromptRenderer:
    tokenizer = build_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return PromptRenderer(tokenizer, context_length=64, chat_template=None)


def _text(name: str, value: str) -> Tensor:
    return Tensor(name, "BYTES", (1,), np.array([value.encode()], dtype=np.object_))


def _bool(name: str, value: bool) -> Tensor:
    return Tensor(name, "BOOL", (1,), np.array([value]))


def _request(*inputs: Tensor, parameters: dict | None = None, outputs=()) -> InFlightRequest:
    request = InferenceRequest(
        model_name="m",
        inputs=list(inputs),
        parameters=parameters or {},
        outputs=[RequestedOutput(name) for name in outputs],
    )
    return validated(request, 1)


def test_config_completion_adds_the_vllm_backend_schema_and_makes_the_model_decoupled() -> None:
    config = mc.ModelConfig(name="m", backend="llm")
    complete_config(config)
    assert [t.name for t in config.input][:3] == ["text_input", "input_ids", "messages"]
    assert all(t.optional for t in config.input)
    assert [t.name for t in config.output] == [name for name, _, _ in OUTPUTS]
    assert config.model_transaction_policy.decoupled
    assert config.max_batch_size == 0


def test_config_with_batching_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="max_batch_size: 0"):
        complete_config(mc.ModelConfig(name="m", max_batch_size=4))
    config = mc.ModelConfig(name="m")
    config.dynamic_batching.SetInParent()
    with pytest.raises(ModelLoadError, match="dynamic_batching"):
        complete_config(config)


def test_sampling_parameters_json_wins_over_request_parameters(renderer) -> None:
    job = decode_request(
        _request(
            _text("text_input", "Hello"),
            _text("sampling_parameters", json.dumps({"max_tokens": 3, "temperature": 0})),
            parameters={"max_tokens": 9},
        ),
        renderer,
    )
    assert job.params.max_tokens == 3 and job.params.temperature == 0
    assert job.prompt == "Hello" and not job.stream
    assert not job.exclude_input  # vLLM backend: the prompt is echoed unless excluded


def test_request_parameters_are_the_fallback_and_strings_are_converted(renderer) -> None:
    job = decode_request(
        _request(
            _text("text_input", "Hello"),
            _bool("stream", True),
            parameters={
                "max_tokens": "4",
                "temperature": "0.5",
                "ignore_eos": "true",
                "triton_enable_empty_final_response": True,
            },
        ),
        renderer,
    )
    assert (job.params.max_tokens, job.params.temperature, job.params.ignore_eos) == (4, 0.5, True)
    assert job.stream and job.exclude_input  # a stream carries only new text by default


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"bogus": 1}, "bogus"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 2}, "top_p"),
    ],
)
def test_bad_sampling_parameters_are_400s_naming_the_field(renderer, sampling, message) -> None:
    request = _request(_text("text_input", "x"), _text("sampling_parameters", json.dumps(sampling)))
    with pytest.raises(InvalidArgumentError, match=message):
        decode_request(request, renderer)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ((), "exactly one of"),
        ((_text("text_input", "a"), _text("messages", "[]")), "exactly one of"),
        ((_text("text_input", "a"), _text("sampling_parameters", "{oops")), "not valid JSON"),
        ((_text("text_input", "a"), _text("sampling_parameters", "[1]")), "JSON object"),
        ((_text("messages", '{"role": "user"}'),), "non-empty list"),
        ((_text("messages", '[{"role": "user", "content": 5}]'),), "content must be a string"),
        ((_text("text_input", "word " * 10_000),), "cannot fit"),
    ],
)
def test_bad_inputs_are_refused_before_the_engine(renderer, inputs, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        decode_request(_request(*inputs), renderer)


def test_input_ids_are_checked_against_the_vocabulary(renderer) -> None:
    ids = Tensor("input_ids", "INT64", (2,), np.array([1, 10_000], dtype=np.int64))
    with pytest.raises(InvalidArgumentError, match="token ids in"):
        decode_request(_request(ids), renderer)
    ok = Tensor("input_ids", "INT64", (2,), np.array([7, 8], dtype=np.int64))
    job = decode_request(_request(ok), renderer)
    assert job.prompt == [7, 8]
    assert job.prompt_text  # decoded, since it is echoed by default


def test_chat_messages_are_rendered_with_the_chat_template(renderer) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    job = decode_request(
        _request(
            _text("messages", json.dumps(messages)),
            _text("sampling_parameters", '{"max_tokens": null}'),
        ),
        renderer,
    )
    assert job.prompt_text == "<|user|>Hello\n<|assistant|>"
    assert isinstance(job.prompt, list)
    # max_tokens null: whatever room the context leaves.
    assert job.params.max_tokens == renderer.context_length - len(job.prompt)


def test_return_flags_and_requested_outputs_select_outputs(renderer) -> None:
    job = decode_request(
        _request(
            _text("text_input", "x"), _bool("return_logprobs", True), outputs=["finish_reason"]
        ),
        renderer,
    )
    assert job.returns == ReturnOptions(finish_reason=True, logprobs=True)
    assert job.params.logprobs == 0  # logprobs of the sampled tokens are needed


def test_response_tensors() -> None:
    logprobs = [
        TokenLogprob(5, -0.5, "a", [TopLogprob(5, -0.5, "a")]),
        TokenLogprob(6, -1.0, "b", []),
    ]
    tensors = response_tensors(
        ReturnOptions(True, True, True, True, True), "ab", "stop", 3, 2, logprobs, -1.5
    )
    values = {t.name: t.data.reshape(-1)[0] for t in tensors}
    assert values["text_output"] == b"ab"
    assert values["finish_reason"] == b"stop"
    assert (values["num_input_tokens"], values["num_output_tokens"]) == (3, 2)
    assert values["cumulative_logprob"] == pytest.approx(-1.5)
    document = json.loads(values["logprobs"])
    assert document[0] == {
        "token_id": 5,
        "token": "a",
        "logprob": -0.5,
        "top_logprobs": [{"token_id": 5, "token": "a", "logprob": -0.5}],
    }
    only_text = response_tensors(ReturnOptions(), "x", None, 1, 1, [], 0.0)
    assert [t.name for t in only_text] == ["text_output"]


def test_sampling_params_keeps_unparseable_strings_for_a_clear_error() -> None:
    with pytest.raises(InvalidArgumentError, match="max_tokens"):
        sampling_params({"max_tokens": "many"})
