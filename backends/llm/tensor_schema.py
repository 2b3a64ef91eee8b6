"""The `llm` model's tensors, named as Triton's vLLM backend names them, and their decoding.

Inputs (all optional, but one of text_input / input_ids / messages is needed):
  text_input (BYTES [1]) the prompt; input_ids (INT64 [-1]) the prompt as token ids;
  messages (BYTES [1], Trident's addition) a JSON list of chat messages, rendered with the
  tokenizer's chat template; stream (BOOL [1]); sampling_parameters (BYTES [1], a JSON object;
  without it, the request's parameters are the sampling parameters); exclude_input_in_output,
  return_finish_reason, return_num_input_tokens, return_num_output_tokens, return_logprobs,
  return_cumulative_logprob (BOOL [1]).
Outputs: text_output, finish_reason, logprobs (JSON) (BYTES [-1]); num_input_tokens,
  num_output_tokens (UINT32 [-1]); cumulative_logprob (FP32 [-1]).

Everything here runs on the event loop before a request reaches the engine, so every size is
checked before anything is decoded or tokenized.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import InvalidArgumentError, ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import Tensor

from .engine import InvalidSamplingParams, SamplingParams, TokenLogprob

#: (name, config type, dims) of every input.
INPUTS: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("text_input", mc.TYPE_STRING, (1,)),
    ("input_ids", mc.TYPE_INT64, (-1,)),
    ("messages", mc.TYPE_STRING, (1,)),
    ("stream", mc.TYPE_BOOL, (1,)),
    ("sampling_parameters", mc.TYPE_STRING, (1,)),
    ("exclude_input_in_output", mc.TYPE_BOOL, (1,)),
    ("return_finish_reason", mc.TYPE_BOOL, (1,)),
    ("return_num_input_tokens", mc.TYPE_BOOL, (1,)),
    ("return_num_output_tokens", mc.TYPE_BOOL, (1,)),
    ("return_logprobs", mc.TYPE_BOOL, (1,)),
    ("return_cumulative_logprob", mc.TYPE_BOOL, (1,)),
)
#: (name, config type, dims) of every output.
OUTPUTS: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("text_output", mc.TYPE_STRING, (-1,)),
    ("finish_reason", mc.TYPE_STRING, (-1,)),
    ("num_input_tokens", mc.TYPE_UINT32, (-1,)),
    ("num_output_tokens", mc.TYPE_UINT32, (-1,)),
    ("logprobs", mc.TYPE_STRING, (-1,)),
    ("cumulative_logprob", mc.TYPE_FP32, (-1,)),
)
#: Output produced when the matching return_* input is true (or the client names the output).
RETURN_FLAGS = {
    "return_finish_reason": "finish_reason",
    "return_num_input_tokens": "num_input_tokens",
    "return_num_output_tokens": "num_output_tokens",
    "return_logprobs": "logprobs",
    "return_cumulative_logprob": "cumulative_logprob",
}

#: Largest sampling_parameters JSON, and most chat messages, accepted.
MAX_SAMPLING_JSON_BYTES = 64 * 1024
MAX_MESSAGES = 1024
#: Request parameters that are never sampling parameters (set by clients for the server).
_RESERVED_PARAMETER_PREFIX = "triton_"

_PARAM_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(SamplingParams)}


@dataclass(frozen=True, slots=True)
class ReturnOptions:
    """Which optional outputs a request asked for."""

    finish_reason: bool = False
    num_input_tokens: bool = False
    num_output_tokens: bool = False
    logprobs: bool = False
    cumulative_logprob: bool = False


@dataclass(slots=True)
class GenerationRequest:
    """A request decoded from its tensors, ready for the engine."""

    #: The prompt as text, or as token ids (input_ids and chat messages).
    prompt: str | list[int]
    #: The prompt as text, echoed when the input is not excluded from the output.
    prompt_text: str
    params: SamplingParams
    stream: bool
    exclude_input: bool
    returns: ReturnOptions


class PromptRenderer:
    """What decoding needs of the tokenizer: the chat template and a prompt-size bound."""

    def __init__(self, tokenizer: Any, context_length: int, chat_template: str | None) -> None:
        self._tokenizer = tokenizer
        self._chat_template = chat_template
        self.context_length = context_length
        self.vocab_size = len(tokenizer)
        # A token's text is never longer than its vocabulary entry, so a prompt longer than
        # context_length * longest entry cannot fit: refused before tokenizing megabytes.
        longest = max((len(token) for token in tokenizer.get_vocab()), default=1)
        self.max_prompt_chars = context_length * max(longest, 1)

    def check_text(self, text: str, what: str) -> None:
        if len(text) > self.max_prompt_chars:
            raise InvalidArgumentError(
                f"{what} of {len(text)} characters cannot fit in the model's context of "
                f"{self.context_length} tokens"
            )

    def render_chat(self, messages: list[dict[str, str]]) -> tuple[list[int], str]:
        """Apply the chat template; returns (token ids, the rendered text)."""
        try:
            text = self._tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=True,
                chat_template=self._chat_template,
            )
        except Exception as exc:  # a template error is the client's messages or the template
            raise InvalidArgumentError(f"cannot apply the chat template: {exc}") from None
        if not isinstance(text, str):
            raise InvalidArgumentError("the chat template did not render to text")
        self.check_text(text, "chat prompt")
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return [int(token) for token in ids], text

    def count_tokens(self, text: str) -> int:
        """Tokens of a prompt, as the engine counts them (special tokens added)."""
        return len(self._tokenizer(text)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))


def complete_config(config: mc.ModelConfig) -> None:
    """Add the inputs and outputs the config leaves out; one request at a time, decoupled."""
    if config.max_batch_size > 0:
        raise ModelLoadError(
            "llm models batch inside their engine (continuous batching): set max_batch_size: 0"
        )
    if config.HasField("dynamic_batching") or config.HasField("sequence_batching"):
        raise ModelLoadError(
            "llm models batch inside their engine: remove dynamic_batching / sequence_batching"
        )
    present = {tensor.name for tensor in config.input}
    for name, data_type, dims in INPUTS:
        if name not in present:
            config.input.add(name=name, data_type=data_type, dims=list(dims), optional=True)
    present = {tensor.name for tensor in config.output}
    for name, data_type, dims in OUTPUTS:
        if name not in present:
            config.output.add(name=name, data_type=data_type, dims=list(dims))
    if not config.HasField("model_transaction_policy"):
        config.model_transaction_policy.decoupled = True


# ------------------------------------------------------------------------------- decoding


def decode_request(request: InFlightRequest, renderer: PromptRenderer) -> GenerationRequest:
    """Read a request's tensors and parameters; raise InvalidArgumentError naming the field."""
    text = _optional_text(request, "text_input")
    ids_tensor = request.input("input_ids")
    messages_text = _optional_text(request, "messages")
    given = [x is not None for x in (text, ids_tensor, messages_text)]
    if sum(given) != 1:
        raise InvalidArgumentError(
            "give exactly one of 'text_input', 'input_ids' or 'messages' (the prompt)"
        )
    prompt: str | list[int]
    if text is not None:
        renderer.check_text(text, "text_input")
        prompt, prompt_text = text, text
    elif ids_tensor is not None:
        prompt = _token_ids(ids_tensor, renderer)
        prompt_text = ""  # decoded only when echoed
    else:
        assert messages_text is not None
        prompt, prompt_text = renderer.render_chat(parse_messages(messages_text))
    stream = _optional_bool(request, "stream", False)
    returns = ReturnOptions(
        **{
            output: _optional_bool(request, flag, False) or _requested(request, output)
            for flag, output in RETURN_FLAGS.items()
        }
    )
    values = _sampling_source(request)
    # "max_tokens": null asks for as many tokens as the context leaves (OpenAI chat's default).
    to_context = "max_tokens" in values and values["max_tokens"] is None
    if to_context:
        values = {key: value for key, value in values.items() if key != "max_tokens"}
    params = sampling_params(values)
    if to_context:
        used = len(prompt) if isinstance(prompt, list) else renderer.count_tokens(prompt)
        params.max_tokens = max(1, renderer.context_length - used)
        if params.min_tokens > params.max_tokens:
            raise InvalidArgumentError("min_tokens exceeds the room the context leaves")
    if (returns.logprobs or returns.cumulative_logprob) and params.logprobs is None:
        params.logprobs = 0  # the sampled tokens' logprobs, without alternatives
    exclude = _optional_bool(request, "exclude_input_in_output", stream)
    if not exclude and isinstance(prompt, list) and not prompt_text:
        prompt_text = renderer.decode(prompt)
    return GenerationRequest(prompt, prompt_text, params, stream, exclude, returns)


def _requested(request: InFlightRequest, output: str) -> bool:
    return any(wanted.name == output for wanted in request.outputs)


def _single(request: InFlightRequest, name: str) -> Any:
    tensor = request.input(name)
    if tensor is None:
        return None
    data = tensor.data
    if data is None or data.size != 1:
        raise InvalidArgumentError(f"input '{name}' must hold exactly one element")
    return data.reshape(-1)[0]


def _optional_text(request: InFlightRequest, name: str) -> str | None:
    value = _single(request, name)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except (TypeError, UnicodeDecodeError):
        raise InvalidArgumentError(f"input '{name}' must be UTF-8 text") from None


def _optional_bool(request: InFlightRequest, name: str, default: bool) -> bool:
    value = _single(request, name)
    return default if value is None else bool(value)


def _token_ids(tensor: Tensor, renderer: PromptRenderer) -> list[int]:
    data = tensor.data
    assert data is not None
    if data.size == 0:
        raise InvalidArgumentError("input 'input_ids' is empty")
    if data.size > renderer.context_length:
        raise InvalidArgumentError(
            f"input_ids holds {data.size} tokens; the model's context is "
            f"{renderer.context_length} tokens"
        )
    flat = data.reshape(-1)
    if int(flat.min()) < 0 or int(flat.max()) >= renderer.vocab_size:
        raise InvalidArgumentError(
            f"input_ids must be token ids in [0, {renderer.vocab_size}), got "
            f"{int(flat.min())}..{int(flat.max())}"
        )
    return [int(token) for token in flat]


def parse_messages(text: str) -> list[dict[str, str]]:
    """Chat messages: a JSON list of {"role": str, "content": str} (content may also be a list
    of {"type": "text", "text": str} parts, joined)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"'messages' is not valid JSON: {exc}") from None
    if not isinstance(document, list) or not document:
        raise InvalidArgumentError("'messages' must be a non-empty list of messages")
    if len(document) > MAX_MESSAGES:
        raise InvalidArgumentError(f"at most {MAX_MESSAGES} messages are accepted")
    messages = []
    for index, message in enumerate(document):
        if not isinstance(message, dict):
            raise InvalidArgumentError(f"messages[{index}] must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidArgumentError(f"messages[{index}].role must be a non-empty string")
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise InvalidArgumentError(
                        f"messages[{index}].content: only text parts are supported"
                    )
                if not isinstance(part.get("text"), str):
                    raise InvalidArgumentError(f"messages[{index}].content: text must be a string")
                parts.append(part["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise InvalidArgumentError(f"messages[{index}].content must be a string")
        messages.append({"role": role, "content": content})
    return messages


def _sampling_source(request: InFlightRequest) -> dict[str, Any]:
    """sampling_parameters JSON, else the request's own parameters (vLLM backend's rule)."""
    tensor = request.input("sampling_parameters")
    if tensor is None:
        return {
            key: value
            for key, value in request.parameters.items()
            if not key.startswith(_RESERVED_PARAMETER_PREFIX)
        }
    value = _single(request, "sampling_parameters")
    size = len(value) if isinstance(value, (bytes, str)) else 0
    if size > MAX_SAMPLING_JSON_BYTES:
        raise InvalidArgumentError(
            f"sampling_parameters is {size} bytes; at most {MAX_SAMPLING_JSON_BYTES} accepted"
        )
    try:
        document = json.loads(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"sampling_parameters is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError("sampling_parameters must be a JSON object")
    return document


def sampling_params(values: Mapping[str, Any]) -> SamplingParams:
    """SamplingParams from JSON-like values. Numbers and booleans given as strings ("0.7",
    "true": what tools written for the vLLM backend send) are converted first."""
    converted = {key: _coerce(key, value) for key, value in values.items()}
    try:
        return SamplingParams.from_dict(converted)
    except InvalidSamplingParams as exc:
        raise InvalidArgumentError(f"invalid sampling parameter {exc}") from None
    except TypeError as exc:  # a value the dataclass cannot take at all
        raise InvalidArgumentError(f"invalid sampling parameters: {exc}") from None


def _coerce(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    kind = _PARAM_TYPES.get(key, "")
    try:
        if kind.startswith("bool"):
            if value.lower() in ("true", "false"):
                return value.lower() == "true"
        elif kind.startswith("int"):
            return int(value)
        elif kind.startswith("float"):
            return float(value)
    except ValueError:
        pass  # left as a string: from_dict names the field and the expected type
    return value


# ------------------------------------------------------------------------------- encoding


def logprobs_document(logprobs: list[TokenLogprob]) -> list[dict[str, Any]]:
    """The `logprobs` output: one entry per generated token."""
    return [
        {
            "token_id": entry.token_id,
            "token": entry.text,
            "logprob": entry.logprob,
            "top_logprobs": [
                {"token_id": top.token_id, "token": top.text, "logprob": top.logprob}
                for top in entry.top
            ],
        }
        for entry in logprobs
    ]


def response_tensors(
    returns: ReturnOptions,
    text: str,
    finish_reason: str | None,
    num_input_tokens: int,
    num_output_tokens: int,
    logprobs: list[TokenLogprob],
    cumulative_logprob: float,
) -> list[Tensor]:
    """The outputs of one response: text_output, then the ones the request asked for."""
    tensors = [_bytes_tensor("text_output", text)]
    if returns.finish_reason:
        tensors.append(_bytes_tensor("finish_reason", finish_reason or ""))
    if returns.num_input_tokens:
        tensors.append(_number_tensor("num_input_tokens", num_input_tokens, np.uint32))
    if returns.num_output_tokens:
        tensors.append(_number_tensor("num_output_tokens", num_output_tokens, np.uint32))
    if returns.logprobs:
        document = json.dumps(logprobs_document(logprobs), ensure_ascii=False)
        tensors.append(_bytes_tensor("logprobs", document))
    if returns.cumulative_logprob:
        tensors.append(_number_tensor("cumulative_logprob", cumulative_logprob, np.float32))
    return tensors


def _bytes_tensor(name: str, text: str) -> Tensor:
    return Tensor(name, "BYTES", (1,), np.array([text.encode("utf-8")], dtype=np.object_))


def _number_tensor(name: str, value: float, dtype: type) -> Tensor:
    datatype = "UINT32" if dtype is np.uint32 else "FP32"
    return Tensor(name, datatype, (1,), np.array([value], dtype=dtype))
