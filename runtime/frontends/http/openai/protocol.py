"""OpenAI request bodies: checked field by field, then turned into an `llm` model's tensors.

Completions and chat completions map onto the tensor schema of the `llm` backend (the names of
Triton's vLLM backend): the prompt becomes `text_input` or `input_ids`, chat `messages` travel as
JSON in the `messages` input (the backend applies the tokenizer's chat template), and every
sampling field goes into the `sampling_parameters` JSON. Unknown fields, wrong types and features
that are not supported (n > 1, tools, suffix...) are refused with a 400 naming the field, before
anything reaches the model.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import InferenceRequest, Tensor


class Endpoint(enum.Enum):
    COMPLETIONS = "completions"
    CHAT = "chat"


#: Sampling fields passed to the engine as they are (OpenAI's, then vLLM's extra fields).
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "top_k",
    "min_p",
    "repetition_penalty",
    "ignore_eos",
    "min_tokens",
    "stop_token_ids",
    "include_stop_str_in_output",
)
#: Fields accepted and ignored (they change nothing in how text is generated here).
_IGNORED = ("user", "store", "metadata", "parallel_tool_calls", "service_tier")
_COMMON = (
    "model",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "logit_bias",
    *SAMPLING_FIELDS,
    *_IGNORED,
)
_FIELDS: dict[Endpoint, frozenset[str]] = {
    Endpoint.COMPLETIONS: frozenset((*_COMMON, "prompt", "echo", "logprobs", "best_of", "suffix")),
    Endpoint.CHAT: frozenset(
        (
            *_COMMON,
            "messages",
            "max_completion_tokens",
            "logprobs",
            "top_logprobs",
            "response_format",
            "tools",
            "tool_choice",
            "functions",
            "function_call",
        )
    ),
}
#: Most top logprobs per token (OpenAI's limits: 5 for completions, 20 for chat).
MAX_TOP_LOGPROBS = {Endpoint.COMPLETIONS: 5, Endpoint.CHAT: 20}
#: Longest X-Request-Id accepted as the response id.
MAX_REQUEST_ID_CHARS = 128


@dataclass
class OpenAIRequest:
    """A checked completions or chat completions request."""

    endpoint: Endpoint
    model: str
    stream: bool
    include_usage: bool
    #: Usage on every chunk (vLLM's stream_options.continuous_usage_stats).
    continuous_usage: bool
    echo: bool
    #: None: no logprobs; n: the sampled token's and the n most likely tokens' logprobs.
    logprobs: int | None
    sampling: dict[str, Any] = field(default_factory=dict)
    text_prompt: str | None = None
    token_prompt: list[int] | None = None
    messages: list[Any] | None = None


def parse_request(document: Any, endpoint: Endpoint) -> OpenAIRequest:
    """Check a request body (already JSON-decoded); raise InvalidArgumentError naming the field."""
    if not isinstance(document, dict):
        raise InvalidArgumentError("the request body must be a JSON object")
    allowed = _FIELDS[endpoint]
    for key in document:
        if key not in allowed:
            raise InvalidArgumentError(f"unknown field '{key}'")
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgumentError("'model' must be the name of a served model")
    _expect_absent_or(document, "n", (1,), "only n = 1 is supported")
    _expect_absent_or(document, "best_of", (1,), "only best_of = 1 is supported")
    if document.get("logit_bias"):
        raise InvalidArgumentError("'logit_bias' is not supported")
    if document.get("suffix"):
        raise InvalidArgumentError("'suffix' is not supported")
    for key in ("tools", "tool_choice", "functions", "function_call"):
        if document.get(key) not in (None, [], "none"):
            raise InvalidArgumentError(f"'{key}': tool and function calling is not supported")
    response_format = document.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise InvalidArgumentError('\'response_format\': only {"type": "text"} is supported')
    stream = _optional_bool(document, "stream")
    options = document.get("stream_options")
    include_usage = continuous = False
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidArgumentError("'stream_options' must be an object")
        if not stream:
            raise InvalidArgumentError("'stream_options' is only allowed with stream: true")
        for key in options:
            if key not in ("include_usage", "continuous_usage_stats"):
                raise InvalidArgumentError(f"unknown field 'stream_options.{key}'")
        include_usage = _optional_bool(options, "include_usage", "stream_options.")
        continuous = _optional_bool(options, "continuous_usage_stats", "stream_options.")
    sampling = {key: document[key] for key in SAMPLING_FIELDS if document.get(key) is not None}
    request = OpenAIRequest(
        endpoint=endpoint,
        model=model,
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        echo=False,
        logprobs=None,
        sampling=sampling,
    )
    if endpoint is Endpoint.COMPLETIONS:
        _parse_completion(document, request)
    else:
        _parse_chat(document, request)
    return request


def _parse_completion(document: dict[str, Any], request: OpenAIRequest) -> None:
    prompt = document.get("prompt")
    # One prompt per request: a list of one prompt (text or token ids) is that prompt.
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidArgumentError("'prompt' must not be empty")
        request.text_prompt = prompt
    elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        request.token_prompt = [int(t) for t in prompt]
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise InvalidArgumentError("'prompt': one prompt per request (batches are not supported)")
    else:
        raise InvalidArgumentError("'prompt' must be a string or a list of token ids")
    max_tokens = document.get("max_tokens")
    # OpenAI's default for completions is 16 tokens.
    request.sampling["max_tokens"] = (
        16 if max_tokens is None else _max_tokens(max_tokens, "max_tokens")
    )
    request.echo = _optional_bool(document, "echo")
    logprobs = document.get("logprobs")
    if logprobs is not None:
        request.logprobs = _bounded_int(logprobs, "logprobs", MAX_TOP_LOGPROBS[request.endpoint])
        if request.echo:
            raise InvalidArgumentError("'logprobs' with 'echo' (prompt logprobs) is not supported")


def _parse_chat(document: dict[str, Any], request: OpenAIRequest) -> None:
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidArgumentError("'messages' must be a non-empty list")
    request.messages = messages  # each message is checked by the backend
    value = document.get("max_completion_tokens")
    key = "max_completion_tokens"
    if value is None:
        value, key = document.get("max_tokens"), "max_tokens"
    # Without a limit, chat generates up to the context length (the backend's None rule).
    request.sampling["max_tokens"] = None if value is None else _max_tokens(value, key)
    if _optional_bool(document, "logprobs"):
        top = document.get("top_logprobs")
        request.logprobs = (
            0
            if top is None
            else _bounded_int(top, "top_logprobs", MAX_TOP_LOGPROBS[request.endpoint])
        )
    elif document.get("top_logprobs") is not None:
        raise InvalidArgumentError("'top_logprobs' needs 'logprobs': true")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _max_tokens(value: Any, key: str) -> int:
    if not _is_int(value):
        raise InvalidArgumentError(f"'{key}' must be an integer")
    if value < 1:
        raise InvalidArgumentError(f"'{key}' must be at least 1, got {value}")
    return int(value)


def _bounded_int(value: Any, key: str, maximum: int) -> int:
    if not _is_int(value) or not 0 <= value <= maximum:
        raise InvalidArgumentError(f"'{key}' must be an integer from 0 to {maximum}")
    return int(value)


def _optional_bool(document: dict[str, Any], key: str, prefix: str = "") -> bool:
    value = document.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"'{prefix}{key}' must be true or false")
    return value


def _expect_absent_or(
    document: dict[str, Any], key: str, allowed: tuple[int, ...], message: str
) -> None:
    value = document.get(key)
    if value is not None and (not _is_int(value) or value not in allowed):
        raise InvalidArgumentError(f"'{key}': {message}")


def request_id_header(value: str | None) -> str | None:
    """X-Request-Id, when it is short printable ASCII; otherwise None (a fresh id is used)."""
    if value is None or not 0 < len(value) <= MAX_REQUEST_ID_CHARS:
        return None
    if not value.isascii() or not value.isprintable():
        return None
    return value


def to_inference_request(request: OpenAIRequest, request_id: str) -> InferenceRequest:
    """The `llm` model's tensors for this request (backends/llm/tensor_schema.py)."""
    inputs: list[Tensor] = []
    if request.text_prompt is not None:
        inputs.append(_text("text_input", request.text_prompt))
    elif request.token_prompt is not None:
        ids = np.array(request.token_prompt, dtype=np.int64)
        inputs.append(Tensor("input_ids", "INT64", (len(request.token_prompt),), ids))
    else:
        inputs.append(_text("messages", json.dumps(request.messages, ensure_ascii=False)))
    sampling = dict(request.sampling)
    if request.logprobs is not None:
        sampling["logprobs"] = request.logprobs
    inputs.append(_text("sampling_parameters", json.dumps(sampling, ensure_ascii=False)))
    inputs.append(_flag("stream", request.stream))
    inputs.append(_flag("exclude_input_in_output", not request.echo))
    for name in ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens"):
        inputs.append(_flag(name, True))
    inputs.append(_flag("return_logprobs", request.logprobs is not None))
    return InferenceRequest(model_name=request.model, id=request_id, inputs=inputs)


def _text(name: str, value: str) -> Tensor:
    return Tensor(name, "BYTES", (1,), np.array([value.encode("utf-8")], dtype=np.object_))


def _flag(name: str, value: bool) -> Tensor:
    return Tensor(name, "BOOL", (1,), np.array([value], dtype=np.bool_))
