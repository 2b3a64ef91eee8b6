"""OpenAI-compatible routes on the HTTP port: GET /v1/models, POST /v1/completions and
POST /v1/chat/completions, for models served by the `llm` backend.

Each request becomes an ordinary inference request on the model (protocol.py) and goes through
the same data plane as /generate, so statistics, validation and cancellation are the core's.
Streams are server-sent events `data: {chunk}\\n\\n` ending with `data: [DONE]\\n\\n`. Errors use
OpenAI's body, {"error": {"message", "type", "param", "code"}}, with the error's HTTP status
(400 bad request, 404 unknown model, 429 engine overloaded); once a stream has started, an error
arrives as a `data: {"error": ...}` event before [DONE]. A client that disconnects cancels its
request, which aborts its generation in the engine.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from trident.runtime.core.data_plane import DataPlane
from trident.runtime.errors import InvalidArgumentError, NotFoundError, TridentError
from trident.runtime.types import InferenceRequest, InferenceResponse

from .. import codec
from .protocol import (
    Endpoint,
    OpenAIRequest,
    parse_request,
    request_id_header,
    to_inference_request,
)
from .responses import Delta, ResponseBuilder, Usage, error_document, read_delta

#: The backend whose models these routes serve.
LLM_BACKEND = "llm"
JSON_HEADERS = {"Content-Type": "application/json"}
EVENT_STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
_DONE = b"data: [DONE]\n\n"

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
ReadBody = Callable[[web.BaseRequest], Awaitable[bytes]]


def _json(document: Any, status: int = 200) -> web.Response:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return web.Response(body=body, status=status, headers=JSON_HEADERS)


def _event(document: Any) -> bytes:
    return (
        b"data: "
        + json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        + b"\n\n"
    )


def error_response(error: TridentError) -> web.Response:
    return _json(error_document(error), error.http_status)


class OpenAIHandlers:
    """The /v1 routes. `read_body` is the HTTP frontend's (its size limit applies), and bodies
    nested deeper than `max_json_depth` are refused as on every other route."""

    def __init__(self, dataplane: DataPlane, read_body: ReadBody, max_json_depth: int) -> None:
        self._inference = dataplane.inference
        self._queries = dataplane.queries
        self._admin = dataplane.admin
        self._read_body = read_body
        self._max_json_depth = max_json_depth

    def resolve(self, path: str) -> tuple[frozenset[str], Handler] | None:
        """(allowed methods, handler) for a /v1 path, None when it is not one of ours."""
        if path == "/v1/models":
            return frozenset(("GET",)), self._guard(self.models)
        if path.startswith("/v1/models/") and "/" not in path[len("/v1/models/") :]:
            name = unquote(path[len("/v1/models/") :])
            if not name:
                return None
            return frozenset(("GET",)), self._guard(functools.partial(self.model, name=name))
        if path == "/v1/completions":
            return frozenset(("POST",)), self._guard(
                functools.partial(self.complete, endpoint=Endpoint.COMPLETIONS)
            )
        if path == "/v1/chat/completions":
            return frozenset(("POST",)), self._guard(
                functools.partial(self.complete, endpoint=Endpoint.CHAT)
            )
        return None

    @staticmethod
    def _guard(handler: Handler) -> Handler:
        """Errors as OpenAI error bodies (the v2 routes use Triton's {"error": "..."})."""

        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            try:
                return await handler(request)
            except TridentError as exc:
                return error_response(exc)

        return guarded

    # ------------------------------------------------------------------ models

    async def _llm_models(self) -> list[str]:
        names: list[str] = []
        for entry in await self._admin.repository_index(ready_only=True):
            if entry.name in names:
                continue
            try:
                config = self._queries.model_config(entry.name)
            except TridentError:
                continue  # unloaded meanwhile
            if config.backend == LLM_BACKEND:
                names.append(entry.name)
        return names

    @staticmethod
    def _model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "trident"}

    async def models(self, request: web.BaseRequest) -> web.Response:
        names = await self._llm_models()
        return _json({"object": "list", "data": [self._model_card(name) for name in names]})

    async def model(self, request: web.BaseRequest, name: str) -> web.Response:
        if name not in await self._llm_models():
            raise NotFoundError(f"The model '{name}' does not exist")
        return _json(self._model_card(name))

    # ------------------------------------------------------------------ completions

    async def complete(self, request: web.BaseRequest, endpoint: Endpoint) -> web.StreamResponse:
        body = await self._read_body(request)
        document = codec.parse_json(body, "request", self._max_json_depth)
        openai_request = parse_request(document, endpoint)
        self._check_model(openai_request.model)
        prefix = "chatcmpl-" if endpoint is Endpoint.CHAT else "cmpl-"
        response_id = request_id_header(request.headers.get("X-Request-Id"))
        response_id = response_id or prefix + uuid.uuid4().hex
        builder = ResponseBuilder(openai_request, response_id, int(time.time()))
        infer_request = to_inference_request(openai_request, response_id)
        if openai_request.stream:
            return await self._stream(request, openai_request, infer_request, builder)
        return await self._whole(infer_request, builder)

    def _check_model(self, name: str) -> None:
        try:
            config = self._queries.model_config(name)
        except NotFoundError:
            raise NotFoundError(f"The model '{name}' does not exist") from None
        if config.backend != LLM_BACKEND:
            raise InvalidArgumentError(
                f"model '{name}' is not a language model (backend '{config.backend}'): the /v1 "
                'routes serve models with backend "llm"'
            )

    async def _whole(
        self, infer_request: InferenceRequest, builder: ResponseBuilder
    ) -> web.Response:
        stream = self._inference.infer_stream(infer_request)
        deltas: list[Delta] = []
        try:
            async for response in stream:
                if response.error is not None:
                    raise response.error
                if response.outputs:
                    deltas.append(read_delta(response))
        except asyncio.CancelledError:
            infer_request.cancellation.cancel()  # the client went away
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if len(deltas) != 1:
            raise InvalidArgumentError(f"the model sent {len(deltas)} responses, expected one")
        usage = Usage()
        usage.add(deltas[0])
        return _json(builder.full(deltas[0], usage))

    async def _stream(
        self,
        request: web.BaseRequest,
        openai_request: OpenAIRequest,
        infer_request: InferenceRequest,
        builder: ResponseBuilder,
    ) -> web.StreamResponse:
        stream = self._inference.infer_stream(infer_request)
        usage = Usage()
        try:
            first = await _next(stream)
            if first is not None and first.error is not None:
                raise first.error  # nothing sent yet: an ordinary error response
            response = web.StreamResponse(status=200, headers=EVENT_STREAM_HEADERS)
            await response.prepare(request)
            if openai_request.endpoint is Endpoint.CHAT:
                await response.write(_event(builder.role_chunk()))
            item = first
            while item is not None:
                if item.error is not None:
                    await response.write(_event(error_document(item.error)))
                    break
                if item.outputs:
                    delta = read_delta(item)
                    usage.add(delta)
                    running = usage if openai_request.continuous_usage else None
                    await response.write(_event(builder.chunk(delta, running)))
                item = await _next(stream)
            else:
                if openai_request.include_usage:
                    await response.write(_event(builder.usage_chunk(usage)))
            await response.write(_DONE)
            await response.write_eof()
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            infer_request.cancellation.cancel()
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


async def _next(stream: AsyncIterator[InferenceResponse]) -> InferenceResponse | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
