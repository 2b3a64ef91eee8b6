"""The HTTP router matches Triton's URL patterns exactly (no sockets here)."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest

from trident.runtime.frontends.http.handlers import HttpHandlers
from trident.runtime.frontends.http.server import HttpRouter
from trident.runtime.observability.trace_settings import TraceSettings


def resolve(path: str):
    # Routing calls no service; the handlers only take them (and the tracer) when built.
    dataplane = SimpleNamespace(
        inference=None, queries=None, admin=None, tracer=TraceSettings().tracer
    )
    router = HttpRouter(HttpHandlers(dataplane=dataplane))  # type: ignore[arg-type]
    route = router.resolve(path)
    if route is None:
        return None
    methods, handler = route
    if isinstance(handler, functools.partial):
        return sorted(methods), handler.func.__name__, handler.keywords
    return sorted(methods), handler.__name__, {}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2", (["GET"], "server_metadata", {})),
        ("/v2/health/live", (["GET"], "health", {"kind": "live"})),
        ("/v2/health/ready", (["GET"], "health", {"kind": "ready"})),
        (
            "/v2/models/simple",
            (["GET"], "model_metadata", {"model": "simple", "version": ""}),
        ),
        (
            "/v2/models/my%20model/versions/12/infer",
            (["POST"], "infer", {"model": "my model", "version": "12"}),
        ),
        (
            "/v2/models/llm/generate_stream",
            (["POST"], "generate", {"model": "llm", "version": "", "streaming": True}),
        ),
        (
            "/v2/models/m/versions/2/ready",
            (["GET"], "model_ready", {"model": "m", "version": "2"}),
        ),
        ("/v2/models/m/config", (["GET"], "model_config", {"model": "m", "version": ""})),
        ("/v2/models/m/stats", (["GET"], "model_stats", {"model": "m", "version": ""})),
        ("/v2/models/stats", (["GET"], "model_stats", {"model": "", "version": ""})),
        ("/v2/models/m/trace/setting", (["GET", "POST"], "trace_setting", {"model": "m"})),
        ("/v2/trace/setting", (["GET", "POST"], "trace_setting", {"model": ""})),
        ("/v2/logging", (["GET", "POST"], "logging", {})),
        ("/v2/repository/index", (["POST"], "repository_index", {"repository": ""})),
        (
            "/v2/repository/models/m/load",
            (
                ["POST"],
                "repository_control",
                {"repository": "", "model": "m", "action": "load"},
            ),
        ),
        (
            "/v2/repository/r1/models/m/unload",
            (
                ["POST"],
                "repository_control",
                {"repository": "r1", "model": "m", "action": "unload"},
            ),
        ),
        (
            "/v2/systemsharedmemory/status",
            (["GET"], "system_shared_memory", {"region": "", "action": "status"}),
        ),
        (
            "/v2/systemsharedmemory/region/r0/register",
            (["POST"], "system_shared_memory", {"region": "r0", "action": "register"}),
        ),
        (
            "/v2/cudasharedmemory/unregister",
            (["POST"], "cuda_shared_memory", {"region": "", "action": "unregister"}),
        ),
    ],
)
def test_triton_paths_resolve(path, expected):
    assert resolve(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1/unknown",
        "/v1/models/",
        "/v2/",
        "/v2/models",
        "/v2/models/m/versions/one/infer",
        "/v2/models/m/versions/1/trace/setting",
        "/v2/models/m/infer/",
        "/v2/models/m/unknown",
        "/v2/systemsharedmemory/region/r/delete",
        "/v2/health/alive",
        "/metrics",
    ],
)
def test_other_paths_do_not_resolve(path):
    assert resolve(path) is None


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/models", ["GET"]),
        ("/v1/models/m", ["GET"]),
        ("/v1/completions", ["POST"]),
        ("/v1/chat/completions", ["POST"]),
    ],
)
def test_openai_paths_resolve(path, methods):
    resolved = resolve(path)
    assert resolved is not None and resolved[0] == methods
