"""The Prometheus metrics endpoint: GET /metrics on settings.metrics_address:metrics_port.

The text is rendered at scrape time (runtime/observability/metrics.py) from the counters the
statistics extension keeps, so serving metrics costs the inference path nothing.
"""

from __future__ import annotations

import logging

from aiohttp import web

from trident.runtime.core.model_queries import ModelQueries
from trident.runtime.settings import ServerSettings

from . import codec
from .handlers import JSON_HEADERS

logger = logging.getLogger("trident.metrics")

#: The Prometheus text exposition format, as Triton labels it.
METRICS_CONTENT_TYPE = "text/plain; charset=utf-8"


class MetricsFrontend:
    """Serves GET /metrics; any other path is 404, any other method 405."""

    def __init__(self, queries: ModelQueries, settings: ServerSettings) -> None:
        self.queries = queries
        self.settings = settings
        self._runner: web.ServerRunner | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        server = web.Server(self.dispatch, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(
            runner, self.settings.metrics_address, self.settings.metrics_port, reuse_address=True
        )
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        port = int(runner.addresses[0][1])
        logger.info("Started Metrics Service at %s:%d", self.settings.metrics_address, port)
        return port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def dispatch(self, request: web.BaseRequest) -> web.Response:
        if request.rel_url.raw_path != "/metrics":
            return web.Response(
                body=codec.error_body("Not Found"), status=404, headers=JSON_HEADERS
            )
        if request.method != "GET":
            return web.Response(
                body=codec.error_body("Method Not Allowed"), status=405, headers=JSON_HEADERS
            )
        try:
            text = self.queries.metrics_text()
        except Exception as exc:
            logger.exception("rendering metrics failed")
            return web.Response(
                body=codec.error_body(f"internal error: {type(exc).__name__}: {exc}"),
                status=500,
                headers=JSON_HEADERS,
            )
        return web.Response(
            body=text.encode("utf-8"), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )
