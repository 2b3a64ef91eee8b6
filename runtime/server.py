"""The composition root: builds the core and the frontends from ServerSettings and runs them on
one event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from trident.backends.python.isolation import set_default_busy_poll_us, set_default_isolation
from trident.backends.registry import BackendRegistry
from trident.runtime.core.cuda_shared_memory import CudaSharedMemoryRegistry
from trident.runtime.core.data_plane import DataPlane
from trident.runtime.core.model_manager import ModelManager
from trident.runtime.core.model_overrides import LoadRequestLimits
from trident.runtime.core.repository import ModelRepository
from trident.runtime.core.response_cache import create_response_cache
from trident.runtime.core.shared_memory import SharedMemoryRegistry
from trident.runtime.errors import TridentError
from trident.runtime.observability.log_settings import LogSettings
from trident.runtime.observability.trace_settings import TraceSettings, parse_trace_config
from trident.runtime.settings import ServerSettings

logger = logging.getLogger("trident.server")


class ServerStartError(TridentError):
    """The server could not start (a port in use, a model failing with --exit-on-error...)."""


class TridentServer:
    """One server: models, data plane, and the HTTP, gRPC and metrics frontends."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        set_default_isolation(settings.python_isolation)
        set_default_busy_poll_us(settings.python_isolation_busy_poll_us)
        self.models = ModelManager(
            ModelRepository(settings.model_repositories),
            BackendRegistry(),
            control_mode=settings.model_control_mode,
            strict_model_config=settings.strict_model_config,
            response_cache=create_response_cache(settings.cache_config),
            load_limits=LoadRequestLimits(
                settings.model_load_max_files,
                settings.http_max_input_size,
                settings.http_max_json_depth,
            ),
        )
        self.shared_memory = SharedMemoryRegistry(allow_registration=settings.allow_shared_memory)
        # Opens the CUDA runtime on the first CUDA registration only (none without a GPU).
        self.cuda_shared_memory = CudaSharedMemoryRegistry(
            allow_registration=settings.allow_shared_memory
        )
        self.log_settings = LogSettings(
            log_file=settings.log_file,
            log_info=settings.log_info,
            log_warning=settings.log_warning,
            log_error=settings.log_error,
            log_verbose_level=settings.log_verbose,
        )
        self.trace_settings = TraceSettings(parse_trace_config(settings.trace_config))
        self.dataplane = DataPlane.build(
            self.models,
            self.shared_memory,
            self.cuda_shared_memory,
            self.trace_settings,
            self.log_settings,
            strict_readiness=settings.strict_readiness,
        )
        self._frontends: list[object] = []
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        self.load_failures: dict[str, str] = {}

    async def start(self) -> None:
        """Load the models the control mode selects, then open the frontends."""
        from trident.runtime.frontends.security import check_security_settings

        try:
            check_security_settings(self.settings)  # before loading any model
        except TridentError as exc:
            raise ServerStartError(str(exc)) from None
        loop = asyncio.get_running_loop()
        self.dataplane.bind_loop(loop)
        inference = self.dataplane.inference
        self.models.bind(
            loop,
            inference.infer,
            inference.infer_stream,
            model_control=self.dataplane.model_control(),
        )
        self.log_settings.apply()
        try:
            self.load_failures = await self.models.start(
                self.settings.startup_models, self.settings.repository_poll_secs
            )
        except TridentError as exc:
            raise ServerStartError(str(exc)) from None
        if self.load_failures and self.settings.exit_on_error:
            await self.models.stop()
            failed = "; ".join(f"{n}: {e}" for n, e in self.load_failures.items())
            raise ServerStartError(f"failed to load all models (--exit-on-error): {failed}")
        try:
            await self._start_frontends()
        except Exception:
            await self.stop()
            raise
        # What exists now (modules, models, their weights' Python objects) lives as long as the
        # server: keep it out of the collector's full passes, which otherwise walk it all again
        # and again while serving (a pause of tens of milliseconds with framework modules).
        gc.collect()
        gc.freeze()

    async def _start_frontends(self) -> None:
        settings = self.settings
        if settings.allow_grpc:
            from trident.runtime.frontends.grpc.server import GrpcFrontend

            grpc_frontend = GrpcFrontend(self.dataplane, settings)
            self.grpc_port = await grpc_frontend.start()
            self._frontends.append(grpc_frontend)
        if settings.allow_http:
            from trident.runtime.frontends.http.server import HttpFrontend

            http_frontend = HttpFrontend(self.dataplane, settings)
            self.http_port = await http_frontend.start()
            self._frontends.append(http_frontend)
        if settings.allow_metrics:
            from trident.runtime.frontends.http.metrics_server import MetricsFrontend

            metrics_frontend = MetricsFrontend(self.dataplane.queries, settings)
            self.metrics_port = await metrics_frontend.start()
            self._frontends.append(metrics_frontend)

    async def stop(self) -> bool:
        """Refuse new requests, let in-flight ones finish (up to exit_timeout_secs), unload
        (up to exit_timeout_secs again). False when a model's execute never returned: its
        thread still runs, and a process that means to exit must not wait for it."""
        self.dataplane.begin_shutdown()
        frontends, self._frontends = self._frontends, []
        for frontend in reversed(frontends):
            try:
                await asyncio.wait_for(
                    frontend.stop(),  # type: ignore[attr-defined]
                    timeout=self.settings.exit_timeout_secs,
                )
            except Exception:
                logger.exception("stopping a frontend failed")
        stopped_cleanly = await self._unload_all_models()
        self.shared_memory.unregister()
        try:
            self.cuda_shared_memory.unregister()
        except TridentError:
            logger.exception("closing CUDA shared memory regions failed")
        self.trace_settings.close()  # writes the traces still collected
        return stopped_cleanly

    async def _unload_all_models(self) -> bool:
        """Unload every model, waiting at most exit_timeout_secs: an execute that never
        returns (a hung in-process Python model) must not keep the server from stopping, as in
        Triton. False when some model was still unloading then."""
        unloads = asyncio.ensure_future(self.models.stop())
        done, _ = await asyncio.wait((unloads,), timeout=self.settings.exit_timeout_secs)
        if done:
            unloads.result()
            return True
        logger.error(
            "exit timeout (%g s): models still unloading, held by executes that did not return: "
            "%s; stopping without them",
            self.settings.exit_timeout_secs,
            ", ".join(self.models.unloading_models()) or "?",
        )
        return False

    async def serve_forever(self) -> bool:
        """Start, serve until SIGINT or SIGTERM, then stop; returns what `stop` returns."""
        await self.start()
        logger.info(
            "serving: HTTP on %s:%s, gRPC on %s:%s, metrics on %s:%s",
            self.settings.http_address,
            self.http_port or "-",
            self.settings.grpc_address,
            self.grpc_port or "-",
            self.settings.metrics_address,
            self.metrics_port or "-",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        logger.info("shutting down")
        return await self.stop()
