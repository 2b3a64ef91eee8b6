"""OpenAI response bodies, stream chunks and error bodies, from an `llm` model's responses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trident.runtime.errors import InternalError, TridentError
from trident.runtime.types import InferenceResponse

from .protocol import Endpoint, OpenAIRequest

#: OpenAI's error `type` for each HTTP status class.
_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_error",
    501: "invalid_request_error",
    503: "service_unavailable_error",
}


@dataclass
class Delta:
    """What one model response carries: new text and, on the last one, why it ended."""

    text: str
    finish_reason: str | None
    num_input_tokens: int
    num_output_tokens: int
    logprobs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, delta: Delta) -> None:
        self.prompt_tokens = delta.num_input_tokens
        self.completion_tokens += delta.num_output_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def read_delta(response: InferenceResponse) -> Delta:
    """The text, finish reason, token counts and logprobs of one `llm` response."""
    values: dict[str, Any] = {}
    for tensor in response.outputs:
        if tensor.data is None or tensor.data.size != 1:
            raise InternalError(f"output '{tensor.name}' of the llm model is not one element")
        item = tensor.data.reshape(-1)[0]
        values[tensor.name] = item.decode("utf-8") if isinstance(item, bytes) else item
    if "text_output" not in values:
        raise InternalError("the model sent no 'text_output': is it an llm model?")
    logprobs = json.loads(values["logprobs"]) if "logprobs" in values else []
    return Delta(
        text=str(values["text_output"]),
        finish_reason=str(values.get("finish_reason", "")) or None,
        num_input_tokens=int(values.get("num_input_tokens", 0)),
        num_output_tokens=int(values.get("num_output_tokens", 0)),
        logprobs=logprobs,
    )


def error_document(error: TridentError) -> dict[str, Any]:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    status = error.http_status
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": error.message, "type": kind, "param": None, "code": status}}


class ResponseBuilder:
    """Builds the bodies and chunks of one completion; keeps the text offset for logprobs."""

    def __init__(self, request: OpenAIRequest, response_id: str, created: int) -> None:
        self.request = request
        self.id = response_id
        self.created = created
        self._offset = 0
        chat = request.endpoint is Endpoint.CHAT
        self._object = "chat.completion" if chat else "text_completion"
        self._chunk_object = "chat.completion.chunk" if chat else "text_completion"

    def _logprobs(self, delta: Delta) -> dict[str, Any] | None:
        if self.request.logprobs is None:
            return None
        if self.request.endpoint is Endpoint.CHAT:
            return {
                "content": [
                    {
                        "token": entry["token"],
                        "logprob": entry["logprob"],
                        "bytes": list(entry["token"].encode("utf-8")),
                        "top_logprobs": [
                            {
                                "token": top["token"],
                                "logprob": top["logprob"],
                                "bytes": list(top["token"].encode("utf-8")),
                            }
                            for top in entry["top_logprobs"]
                        ],
                    }
                    for entry in delta.logprobs
                ]
            }
        offsets = []
        for entry in delta.logprobs:
            offsets.append(self._offset)
            self._offset += len(entry["token"])
        return {
            "tokens": [entry["token"] for entry in delta.logprobs],
            "token_logprobs": [entry["logprob"] for entry in delta.logprobs],
            "top_logprobs": [
                {top["token"]: top["logprob"] for top in entry["top_logprobs"]}
                for entry in delta.logprobs
            ],
            "text_offset": offsets,
        }

    def full(self, delta: Delta, usage: Usage) -> dict[str, Any]:
        """The non-streaming body."""
        choice: dict[str, Any] = {"index": 0}
        if self.request.endpoint is Endpoint.CHAT:
            choice["message"] = {"role": "assistant", "content": delta.text}
        else:
            choice["text"] = delta.text
        choice["logprobs"] = self._logprobs(delta)
        choice["finish_reason"] = delta.finish_reason
        return {
            "id": self.id,
            "object": self._object,
            "created": self.created,
            "model": self.request.model,
            "choices": [choice],
            "usage": usage.as_dict(),
        }

    def role_chunk(self) -> dict[str, Any]:
        """Chat streams open with the assistant's role (OpenAI's first chunk)."""
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
        choice["finish_reason"] = None
        return self._chunk([choice])

    def chunk(self, delta: Delta, usage: Usage | None) -> dict[str, Any]:
        """One streamed delta (finish_reason set on the last)."""
        choice: dict[str, Any] = {"index": 0}
        if self.request.endpoint is Endpoint.CHAT:
            choice["delta"] = {"content": delta.text} if delta.text else {}
        else:
            choice["text"] = delta.text
        choice["logprobs"] = self._logprobs(delta)
        choice["finish_reason"] = delta.finish_reason
        document = self._chunk([choice])
        if usage is not None:
            document["usage"] = usage.as_dict()
        return document

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        """stream_options.include_usage: the last chunk, with no choices."""
        document = self._chunk([])
        document["usage"] = usage.as_dict()
        return document

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self._chunk_object,
            "created": self.created,
            "model": self.request.model,
            "choices": choices,
        }
