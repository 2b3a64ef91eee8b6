"""HTTP route handlers: translate each KServe v2 / Triton HTTP endpoint to one call to a part of
the DataPlane (inference, queries or admin).

Handlers read the body, decode it with codec.py, call the core, and encode what comes back
(inference responses with codec.py, every other answer with render.py).
They raise TridentError for anything the client got wrong; server.py turns those into
{"error": "..."} bodies with the error's HTTP status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from trident.runtime.core.data_plane import DataPlane
from trident.runtime.core.json_depth import DEFAULT_MAX_JSON_DEPTH
from trident.runtime.core.model_config import message_to_dict
from trident.runtime.core.model_overrides import LoadRequestLimits
from trident.runtime.core.model_versions import parse_model_version
from trident.runtime.errors import (
    InvalidArgumentError,
    TridentError,
    UnsupportedError,
)
from trident.runtime.types import InferenceRequest, InferenceResponse

from . import codec, generate_codec, render
from .compression import compressed
from .fast_infer import FastInferReply

JSON_HEADERS = {"Content-Type": "application/json"}
TEXT_HEADERS = {"Content-Type": "text/plain"}
EVENT_STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Default cap on a request body (Triton's --http-max-input-size default is 64 MiB).
DEFAULT_MAX_INPUT_SIZE = 64 * 1024 * 1024


def parse_header_length(value: str | None, body_size: int) -> int | None:
    """The Inference-Header-Content-Length header, checked against the body's size."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise InvalidArgumentError(f"Unable to parse {HEADER_LENGTH}, got: {value}") from None
    if length < 0 or length > body_size:
        raise InvalidArgumentError(
            f"inference header size should be in range (0, {body_size}), got: {value}"
        )
    return length


def error_reply(error: TridentError) -> FastInferReply:
    """An error as the fast path sends it: the same status and body as error_response."""
    return FastInferReply(error.http_status, b"application/json", codec.error_body(error.message))


class UnreadableBodyError(InvalidArgumentError):
    """The body could not be decoded; the connection cannot carry another request."""


class UnsupportedContentEncodingError(UnreadableBodyError):
    """A Content-Encoding the server does not read: 415 with the codings it does, as Triton
    answers (the body is left unread, so the connection closes)."""

    http_status = 415


#: Request codings read (Triton's: gzip and deflate; identity or none).
_READABLE_CODINGS = frozenset(("", "identity", "gzip", "deflate"))


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(document), status=status, headers=JSON_HEADERS)


def empty_response(status: int = 200) -> web.Response:
    return web.Response(body=b"", status=status, headers=TEXT_HEADERS)


def error_response(error: TridentError) -> web.Response:
    response = web.Response(
        body=codec.error_body(error.message), status=error.http_status, headers=JSON_HEADERS
    )
    if isinstance(error, UnreadableBodyError):
        response.force_close()
    if isinstance(error, UnsupportedContentEncodingError):
        response.headers["Accept-Encoding"] = "gzip, deflate"
    return response


class HttpHandlers:
    """One method per endpoint; each returns the aiohttp response to send."""

    def __init__(
        self,
        dataplane: DataPlane,
        max_input_size: int = DEFAULT_MAX_INPUT_SIZE,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        load_limits: LoadRequestLimits | None = None,
    ) -> None:
        #: The core's three services; the OpenAI routes use the same ones.
        self.dataplane = dataplane
        self.inference = dataplane.inference
        self.queries = dataplane.queries
        self.admin = dataplane.admin
        #: Samples requests for the trace file (observability/tracing.py).
        self.tracer = dataplane.tracer
        self.max_input_size = max_input_size
        #: Deepest JSON nesting accepted on every JSON route (--http-max-json-depth).
        self.max_json_depth = max_json_depth
        #: Bounds on a load request's files, checked before they are decoded.
        self.load_limits = load_limits or LoadRequestLimits(max_json_depth=max_json_depth)

    # ------------------------------------------------------------------ request plumbing

    async def read_body(self, request: web.BaseRequest) -> bytes:
        """The whole body (decompressed if the client sent Content-Encoding gzip/deflate),
        refused past the size limit before it is all buffered."""
        coding = request.headers.get("Content-Encoding")
        if coding is not None and coding.strip().lower() not in _READABLE_CODINGS:
            raise UnsupportedContentEncodingError(
                f"unsupported Content-Encoding '{coding[:64]}': the server reads gzip, deflate "
                "and identity"
            )
        limit = self.max_input_size
        declared = request.content_length
        if declared is not None and declared > limit:
            raise InvalidArgumentError(_too_large(declared, limit))
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = await request.content.readany()
            except (web.RequestPayloadError, HttpProcessingError) as exc:
                # A body aiohttp could not decode (bad gzip/deflate data, broken chunking).
                # Mark it consumed so aiohttp does not try to drain it again after we answer.
                request.content.feed_eof()
                raise UnreadableBodyError(f"unable to read the request body: {exc}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise InvalidArgumentError(_too_large(total, limit))
            chunks.append(chunk)
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    # ------------------------------------------------------------------ health and metadata

    async def server_metadata(self, request: web.BaseRequest) -> web.Response:
        return json_response(render.server_metadata(self.queries.server_metadata()))

    async def health(self, request: web.BaseRequest, kind: str) -> web.Response:
        ok = self.queries.live() if kind == "live" else self.queries.ready()
        return empty_response(200 if ok else 400)

    async def model_ready(self, request: web.BaseRequest, model: str, version: str) -> web.Response:
        if not self.queries.model_ready(model, version):
            return json_response({"error": "Model version not ready"}, status=400)
        return empty_response(200)

    async def model_metadata(
        self, request: web.BaseRequest, model: str, version: str
    ) -> web.Response:
        return json_response(render.model_metadata(self.queries.model_metadata(model, version)))

    async def model_config(
        self, request: web.BaseRequest, model: str, version: str
    ) -> web.Response:
        return json_response(message_to_dict(self.queries.model_config(model, version)))

    async def model_stats(self, request: web.BaseRequest, model: str, version: str) -> web.Response:
        statistics = self.queries.model_statistics(model, version)
        return json_response(render.model_statistics(statistics))

    # ------------------------------------------------------------------ inference

    async def infer(self, request: web.BaseRequest, model: str, version: str) -> web.StreamResponse:
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await self._infer_events(request, model, version)
        reply = await self.infer_reply(
            model,
            version,
            await self.read_body(request),
            request.headers.get(HEADER_LENGTH),
            request.headers.get("Accept-Encoding"),
        )
        headers = {"Content-Type": reply.content_type.decode()}
        for name, value in reply.headers:
            headers[name.decode()] = value.decode()
        return web.Response(body=reply.body, status=reply.status, headers=headers)

    async def _infer_events(
        self, request: web.BaseRequest, model: str, version: str
    ) -> web.StreamResponse:
        """/infer answered as server-sent events, one v2 response per event."""
        trace = self.tracer.sample(model) if self.tracer.enabled else None
        if trace is not None:
            trace.stamp("HTTP_RECV_START")
        body = await self.read_body(request)
        header_length = parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
        infer_request, _ = self._decode_infer(model, version, body, header_length)
        if trace is not None:
            infer_request.trace = trace
            trace.stamp("HTTP_RECV_END")
        return await self._stream(request, infer_request, _encode_event)

    def _decode_infer(
        self, model: str, version: str, body: bytes, header_length: int | None
    ) -> tuple[InferenceRequest, Any]:
        model_version = parse_model_version(version)
        if header_length == 0:
            config = self.queries.model_config(model, version)
            return codec.decode_raw_request(model, model_version, body, config)
        return codec.decode_infer_request(
            model, model_version, body, header_length, self.max_json_depth
        )

    async def infer_reply(
        self,
        model: str,
        version: str,
        body: bytes,
        header_length_value: str | None,
        accept_encoding: str | None,
    ) -> FastInferReply:
        """One /infer call from its parts, for aiohttp's route and the fast path alike."""
        trace = self.tracer.sample(model) if self.tracer.enabled else None
        if trace is not None:
            trace.stamp("HTTP_RECV_START")
        header_length = parse_header_length(header_length_value, len(body))
        infer_request, encoding = self._decode_infer(model, version, body, header_length)
        if trace is not None:
            infer_request.trace = trace
            trace.stamp("HTTP_RECV_END")
        try:
            response = await self.inference.infer(infer_request)
        except asyncio.CancelledError:
            # The client dropped the connection (aiohttp or the fast path cancels the call).
            infer_request.cancellation.cancel()
            raise
        if trace is not None:
            trace.stamp("HTTP_SEND_START")
        parts, json_length = codec.encode_infer_response(response, encoding)
        content_type = b"application/json"
        headers: list[tuple[bytes, bytes]] = []
        if json_length is not None:
            content_type = b"application/octet-stream"
            headers.append((HEADER_LENGTH.encode(), str(json_length).encode()))
        payload = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        if accept_encoding:
            # As Triton, compress when the client accepts gzip/deflate (tritonclient.http.aio
            # always does: aiohttp sends "Accept-Encoding: gzip, deflate" by default).
            payload, coding = await compressed(payload, accept_encoding)
            if coding != "identity":
                headers.append((b"Content-Encoding", coding.encode()))
        reply = FastInferReply(200, content_type, payload, headers)
        if trace is not None:  # the reply is complete; it is written once we return
            trace.stamp("HTTP_SEND_END")
            trace.finish()
        return reply

    async def generate(
        self, request: web.BaseRequest, model: str, version: str, streaming: bool
    ) -> web.StreamResponse:
        trace = self.tracer.sample(model) if self.tracer.enabled else None
        if trace is not None:
            trace.stamp("HTTP_RECV_START")
        body = await self.read_body(request)
        metadata = self.queries.model_metadata(model, version)
        infer_request = generate_codec.decode_generate_request(
            model, parse_model_version(version), body, metadata, self.max_json_depth
        )
        if trace is not None:
            infer_request.trace = trace
            trace.stamp("HTTP_RECV_END")
        if streaming:
            return await self._stream(
                request, infer_request, generate_codec.encode_generate_response
            )
        responses: list[InferenceResponse] = []
        stream = self.inference.infer_stream(infer_request)
        try:
            while (response := await _next(stream)) is not None:
                if response.error is not None:
                    raise response.error
                if not _is_flag_only(response):
                    responses.append(response)
        except asyncio.CancelledError:
            infer_request.cancellation.cancel()
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if len(responses) != 1:
            # Triton sends this with HTTP 200; it is the client's choice of endpoint: 400.
            raise InvalidArgumentError(
                "generate expects model to produce exactly 1 response, use generate stream for "
                f"model that generates various number of responses (got {len(responses)})"
            )
        if trace is not None:
            trace.stamp("HTTP_SEND_START")
        reply = web.Response(
            body=generate_codec.encode_generate_response(responses[0]), headers=JSON_HEADERS
        )
        if trace is not None:
            trace.stamp("HTTP_SEND_END")
            trace.finish()
        return reply

    async def _stream(
        self,
        request: web.BaseRequest,
        infer_request: InferenceRequest,
        encode: Callable[[InferenceResponse], bytes],
    ) -> web.StreamResponse:
        """Server-sent events, one per response. Errors before the first response are ordinary
        HTTP errors; later ones are sent as a `data: {"error": ...}` event that ends the stream."""
        stream = self.inference.infer_stream(infer_request)
        try:
            first = await _next(stream)
            if first is not None and first.error is not None:
                raise first.error
            trace = infer_request.trace
            if trace is not None:  # the events go out as the responses come
                trace.stamp("HTTP_SEND_START")
            response = web.StreamResponse(status=200, headers=EVENT_STREAM_HEADERS)
            await response.prepare(request)
            item = first
            while item is not None:
                if item.error is not None:
                    await response.write(b"data: " + codec.error_body(item.error.message) + b"\n\n")
                    break
                if not _is_flag_only(item):
                    await response.write(b"data: " + encode(item) + b"\n\n")
                item = await _next(stream)
            await response.write_eof()
            if trace is not None:
                trace.stamp("HTTP_SEND_END")
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            infer_request.cancellation.cancel()
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            if infer_request.trace is not None:
                infer_request.trace.finish()

    # ------------------------------------------------------------------ model repository

    async def repository_index(self, request: web.BaseRequest, repository: str) -> web.Response:
        body = await self.read_body(request)
        ready = False
        if body:
            document = codec.parse_json_object(body, "repository index", self.max_json_depth)
            if "ready" in document:
                ready = document["ready"]
                if not isinstance(ready, bool):
                    raise InvalidArgumentError("Unable to parse 'ready': expected a boolean")
        entries = await self.admin.repository_index(repository, ready)
        return json_response(render.repository_index(entries))

    async def repository_control(
        self, request: web.BaseRequest, repository: str, model: str, action: str
    ) -> web.Response:
        body = await self.read_body(request)
        if repository:
            raise UnsupportedError("'repository_name' specification is not supported")
        if action == "load":
            config, files = codec.decode_load_parameters(body, self.load_limits)
            await self.admin.load_model(model, config, files)
        else:
            unload_dependents = codec.decode_unload_parameters(body, self.max_json_depth)
            await self.admin.unload_model(model, unload_dependents)
        return web.Response(body=b"", headers=JSON_HEADERS)

    # ------------------------------------------------------------------ shared memory

    async def system_shared_memory(
        self, request: web.BaseRequest, region: str, action: str
    ) -> web.Response:
        if action == "status":
            return json_response(render.system_shm_status(self.admin.system_shm_status(region)))
        body = await self.read_body(request)
        if action == "register":
            if not region:
                raise InvalidArgumentError(
                    "'region name' is necessary to register system shared memory region"
                )
            document = codec.parse_json_object(body, "register request", self.max_json_depth)
            if "key" not in document:
                raise InvalidArgumentError("Shared memory register request has no 'key' field")
            if "byte_size" not in document:
                raise InvalidArgumentError(
                    "Shared memory register request has no 'byte_size' field"
                )
            key = _register_field(document, "key", str)
            offset = _register_uint(document.get("offset", 0), "offset")
            byte_size = _register_uint(document["byte_size"], "byte_size")
            self.admin.system_shm_register(region, key, offset, byte_size)
        else:
            self.admin.system_shm_unregister(region)
        return web.Response(body=b"", headers=JSON_HEADERS)

    async def cuda_shared_memory(
        self, request: web.BaseRequest, region: str, action: str
    ) -> web.Response:
        # Without a GPU nothing can be registered: register is 501, status lists nothing and
        # unregister succeeds (perf_analyzer unregisters all CUDA regions before every run).
        if action == "status":
            return json_response(render.cuda_shm_status(self.admin.cuda_shm_status(region)))
        body = await self.read_body(request)
        if action == "register":
            if not region:
                raise InvalidArgumentError(
                    "'region name' is necessary to register cuda shared memory region"
                )
            document = codec.parse_json_object(body, "register request", self.max_json_depth)
            for key in ("raw_handle", "device_id", "byte_size"):
                if key not in document:
                    raise InvalidArgumentError(
                        f"Shared memory register request has no '{key}' field"
                    )
            raw_handle = _register_raw_handle(document["raw_handle"])
            device_id = _register_uint(document["device_id"], "device_id")
            byte_size = _register_uint(document["byte_size"], "byte_size")
            self.admin.cuda_shm_register(region, raw_handle, device_id, byte_size)
        else:
            self.admin.cuda_shm_unregister(region)
        return web.Response(body=b"", headers=JSON_HEADERS)

    # ------------------------------------------------------------------ trace and logging

    async def trace_setting(self, request: web.BaseRequest, model: str) -> web.Response:
        if request.method == "POST":
            body = await self.read_body(request)
            document = (
                codec.parse_json_object(body, "trace setting", self.max_json_depth) if body else {}
            )
            updates = {key: _trace_values(key, value) for key, value in document.items()}
            settings = self.admin.update_trace_settings(model, updates)
        else:
            settings = self.admin.get_trace_settings(model)
        return json_response(render.trace_settings(settings))

    async def logging(self, request: web.BaseRequest) -> web.Response:
        if request.method == "POST":
            body = await self.read_body(request)
            document = codec.parse_json_object(body, "logging", self.max_json_depth) if body else {}
            updates = {key: value for key, value in document.items() if value is not None}
            return json_response(self.admin.update_log_settings(updates))
        return json_response(self.admin.get_log_settings())


# ---------------------------------------------------------------------------------------------


def _too_large(size: int, limit: int) -> str:
    return f"Request JSON size of {size} bytes exceeds the maximum allowed value of {limit} bytes"


def _encode_event(response: InferenceResponse) -> bytes:
    # Events are text: every output is inline JSON data, whatever binary_data asked for.
    parts, _ = codec.encode_infer_response(response, None)
    return bytes(parts[0])


def _is_flag_only(response: InferenceResponse) -> bool:
    """A final marker with nothing in it (a decoupled model's closing 'FINAL' flag)."""
    return response.final and not response.outputs and not response.parameters


async def _next(stream: AsyncIterator[InferenceResponse]) -> InferenceResponse | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def _register_field(document: dict[str, Any], key: str, kind: type) -> Any:
    value = document[key]
    if not isinstance(value, kind):
        raise InvalidArgumentError(f"Unable to parse '{key}' of the register request")
    return value


def _register_uint(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(
            f"Unable to parse '{key}' of the register request: expected a non-negative integer"
        )
    return value


def _register_raw_handle(value: Any) -> bytes:
    """`"raw_handle": {"b64": "..."}`: the cudaIpcMemHandle_t bytes, base64-encoded."""
    encoded = value.get("b64") if isinstance(value, dict) else None
    if not isinstance(encoded, str):
        raise InvalidArgumentError(
            "Unable to parse 'raw_handle' of the register request: expected {\"b64\": string}"
        )
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(
            "Unable to parse 'raw_handle' of the register request: 'b64' is not valid base64"
        ) from None


def _trace_values(key: str, value: Any) -> list[str] | None:
    """Trace settings travel as strings (trace_level as a list); null clears an override."""
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]
    expected = "a list of strings" if key == "trace_level" else "a string"
    raise InvalidArgumentError(f"Unable to parse '{key}': expected {expected}")
