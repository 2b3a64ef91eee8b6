"""The HTTP/REST frontend (KServe v2 protocol with Triton's extensions), on aiohttp.

Routing follows Triton's `http_server.cc` URL patterns exactly (a path either matches one of them
or is a 404 {"error":"Not Found"}; a known path with the wrong method is a 405). Each matched
route calls one method of `HttpHandlers`; a TridentError from it becomes {"error": "..."} with
the error's HTTP status, and anything else a 500 that is logged, never a dropped connection.

Deliberate differences from Triton 2.51 (each one a Triton wart or a missing feature):
- Malformed JSON and `data` whose length disagrees with `shape` are 400, not 500.
- FP16 and BF16 tensors may travel as JSON numbers, in requests and responses.
- /infer streams server-sent events (one v2 response per event) when the client sends
  `Accept: text/event-stream`, so decoupled models work over plain HTTP; without it they are 501.
- /generate on a model that sends other than exactly one response is a 400, not a 200 whose
  body is an error.
- Error statuses follow the error (404 unknown model, 503 unavailable, ...) on every endpoint.
- CUDA shared memory works where a GPU is visible; without one register is 501 while status
  lists nothing and unregister succeeds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from trident.runtime.core.data_plane import DataPlane
from trident.runtime.core.model_overrides import LoadRequestLimits
from trident.runtime.errors import TridentError
from trident.runtime.settings import ServerSettings

from ..restricted_api import ApiGroup, RestrictedApis, http_api_group
from ..tls import TlsConfig
from . import codec
from .fast_infer import FastInferProtocol
from .handlers import JSON_HEADERS, HttpHandlers, error_reply, error_response
from .openai.handlers import OpenAIHandlers

logger = logging.getLogger("trident.http")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
Route = tuple[frozenset[str], Handler]

_GET = frozenset(("GET",))
_POST = frozenset(("POST",))
_GET_POST = frozenset(("GET", "POST"))

# The URL patterns of Triton's HTTPAPIServer (full matches on the raw, still-quoted path).
_SERVER = re.compile(r"/v2(?:/health/(live|ready))?")
_MODEL = re.compile(
    r"/v2/models/([^/]+)(?:/versions/([0-9]+))?"
    r"(?:/(infer|generate|generate_stream|ready|config|stats|trace/setting))?"
)
_REPOSITORY = re.compile(r"/v2/repository(?:/([^/]+))?/(index|models/([^/]+)/(load|unload))")
_SYSTEM_SHM = re.compile(r"/v2/systemsharedmemory(?:/region/([^/]+))?/(status|register|unregister)")
_CUDA_SHM = re.compile(r"/v2/cudasharedmemory(?:/region/([^/]+))?/(status|register|unregister)")


class HttpRouter:
    """Maps a request path to (allowed methods, handler); None when no route matches."""

    def __init__(self, handlers: HttpHandlers) -> None:
        self.handlers = handlers
        self.openai = OpenAIHandlers(
            handlers.dataplane, handlers.read_body, handlers.max_json_depth
        )

    def resolve(self, path: str) -> Route | None:
        h = self.handlers
        if path.startswith("/v1/"):
            return self.openai.resolve(path)
        match = _MODEL.fullmatch(path)
        if match is not None:
            return self._model_route(unquote(match[1]), match[2] or "", match[3] or "")
        match = _SERVER.fullmatch(path)
        if match is not None:
            if match[1] is None:
                return _GET, h.server_metadata
            return _GET, functools.partial(h.health, kind=match[1])
        match = _REPOSITORY.fullmatch(path)
        if match is not None:
            repository = unquote(match[1] or "")
            if match[2] == "index":
                return _POST, functools.partial(h.repository_index, repository=repository)
            return _POST, functools.partial(
                h.repository_control,
                repository=repository,
                model=unquote(match[3]),
                action=match[4],
            )
        for pattern, handler in (
            (_SYSTEM_SHM, h.system_shared_memory),
            (_CUDA_SHM, h.cuda_shared_memory),
        ):
            match = pattern.fullmatch(path)
            if match is not None:
                methods = _GET if match[2] == "status" else _POST
                return methods, functools.partial(
                    handler, region=unquote(match[1] or ""), action=match[2]
                )
        if path == "/v2/trace/setting":
            return _GET_POST, functools.partial(h.trace_setting, model="")
        if path == "/v2/logging":
            return _GET_POST, h.logging
        return None

    def _model_route(self, model: str, version: str, kind: str) -> Route | None:
        h = self.handlers
        if kind == "infer":
            return _POST, functools.partial(h.infer, model=model, version=version)
        if kind in ("generate", "generate_stream"):
            return _POST, functools.partial(
                h.generate, model=model, version=version, streaming=kind == "generate_stream"
            )
        if kind == "ready":
            return _GET, functools.partial(h.model_ready, model=model, version=version)
        if kind == "config":
            return _GET, functools.partial(h.model_config, model=model, version=version)
        if kind == "stats":
            return _GET, functools.partial(h.model_stats, model=model, version=version)
        if kind == "trace/setting":
            if version:
                return None  # trace settings are per model, never per version
            return _GET_POST, functools.partial(h.trace_setting, model=model)
        if model == "stats" and not version:
            # /v2/models/stats: statistics of every loaded model version.
            return _GET, functools.partial(h.model_stats, model="", version="")
        return _GET, functools.partial(h.model_metadata, model=model, version=version)


class HttpFrontend:
    """Serves the v2 HTTP protocol on settings.http_address:settings.http_port."""

    def __init__(self, dataplane: DataPlane, settings: ServerSettings) -> None:
        self.dataplane = dataplane
        self.settings = settings
        max_input_size = settings.http_max_input_size
        load_limits = LoadRequestLimits(
            settings.model_load_max_files, max_input_size, settings.http_max_json_depth
        )
        self.handlers = HttpHandlers(
            dataplane, max_input_size, settings.http_max_json_depth, load_limits
        )
        self.router = HttpRouter(self.handlers)
        self._runner: web.ServerRunner | None = None
        self._listener: asyncio.Server | None = None
        self._fast_connections: set[FastInferProtocol] = set()
        # Resolved once: with nothing restricted no check runs per request.
        self.restrictions = RestrictedApis.for_http(settings.http_restricted_api)
        self.tls = TlsConfig.for_http(settings)

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (useful when the setting is 0)."""
        # handler_cancellation: a client that disconnects cancels its handler, which cancels
        # the inference request. access_log=None keeps logging off the hot path.
        handler = self.dispatch_restricted if self.restrictions else self.dispatch
        server = web.Server(handler, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=self.settings.exit_timeout_secs
        )
        await runner.setup()
        aiohttp_protocol = runner.server
        assert aiohttp_protocol is not None
        ssl_context = self.tls.ssl_context(alpn=("http/1.1",)) if self.tls else None
        protocol_factory: Callable[[], asyncio.BaseProtocol] = aiohttp_protocol
        if self.restrictions.refusal(ApiGroup.INFERENCE, {}) is None:
            # Inference is open to all: infer requests take the fast path, and a connection
            # goes to aiohttp at the first request the fast path does not take (fast_infer.py).
            handlers = self.handlers
            max_body = self.settings.http_max_input_size
            connections = self._fast_connections

            def fast_protocol() -> asyncio.BaseProtocol:
                return FastInferProtocol(
                    aiohttp_protocol, handlers.infer_reply, error_reply, max_body, connections
                )

            protocol_factory = fast_protocol
        try:
            listener = await asyncio.get_running_loop().create_server(
                protocol_factory,
                self.settings.http_address,
                self.settings.http_port,
                reuse_address=True,
                ssl=ssl_context,
            )
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._listener = listener
        port = listener.sockets[0].getsockname()[1]
        logger.info(
            "Started HTTPService at %s:%d%s",
            self.settings.http_address,
            port,
            "" if self.tls is None else " (mutual TLS)" if self.tls.mutual else " (TLS)",
        )
        return int(port)

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for connection in list(self._fast_connections):
            connection.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def dispatch_restricted(self, request: web.BaseRequest) -> web.StreamResponse:
        """`dispatch` behind --http-restricted-api: a call to a restricted group without its
        header is refused as Triton refuses it (403, before the method is even checked)."""
        group = http_api_group(request.rel_url.raw_path)
        refusal = self.restrictions.refusal(group, request.headers)
        if refusal is not None:
            return web.Response(body=codec.error_body(refusal), status=403, headers=JSON_HEADERS)
        return await self.dispatch(request)

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self.router.resolve(request.rel_url.raw_path)
        if route is None:
            return web.Response(
                body=codec.error_body("Not Found"), status=404, headers=JSON_HEADERS
            )
        methods, handler = route
        if request.method not in methods:
            return web.Response(
                body=codec.error_body("Method Not Allowed"), status=405, headers=JSON_HEADERS
            )
        try:
            return await handler(request)
        except TridentError as exc:
            return error_response(exc)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # a bug must cost one request a 500, never the server
            logger.exception("HTTP %s %s failed", request.method, request.path)
            return web.Response(
                body=codec.error_body(f"internal error: {type(exc).__name__}: {exc}"),
                status=500,
                headers=JSON_HEADERS,
            )
