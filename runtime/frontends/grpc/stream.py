"""One ModelStreamInfer call: a bidirectional stream of requests and responses.

Requests are read and run concurrently; responses are written as they come, by one writer (gRPC
allows one write at a time). Responses of non-decoupled models keep their requests' order, as in
Triton; a decoupled model's responses are written as soon as they exist, each with the
`triton_final_response` parameter. An error fails only its request and travels in
`error_message`; the stream goes on, unless the client asked for `triton_grpc_error` mode, where
the first error ends the stream with its status code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from trident.runtime.core.inference import InferenceService
from trident.runtime.core.model_queries import ModelQueries
from trident.runtime.errors import TridentError
from trident.runtime.observability.tracing import Tracer, begin_trace, send_traced
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.types import InferenceRequest, InferenceResponse

from .codec import decode_infer_request, encode_stream_error, is_empty_final
from .codec import wants_empty_final_response as _wants_empty_final
from .status import abort, unexpected
from .wire import InferRequestFrame, write_stream_response

#: What the writer takes from the outbox: response bytes, an error that ends the stream
#: (triton_grpc_error mode), or None for "no more responses".
_Item = bytes | TridentError | None


class InferStream:
    """Runs one stream; `stop_reading()` lets the server end it gracefully at shutdown."""

    def __init__(
        self,
        inference: InferenceService,
        queries: ModelQueries,
        tracer: Tracer,
        close_on_error: bool,
    ) -> None:
        self._inference = inference
        #: Tells whether a request's model is decoupled (its responses are not ordered).
        self._queries = queries
        #: Samples requests for the trace file (observability/tracing.py).
        self._tracer = tracer
        self._close_on_error = close_on_error
        self._outbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        #: Done once the last ordered (non-decoupled) request's response is queued.
        self._previous_ordered: asyncio.Future[None] | None = None

    async def run(
        self, frames: AsyncIterator[InferRequestFrame], context: grpc.aio.ServicerContext
    ) -> None:
        self._reader = asyncio.ensure_future(self._read(frames))
        try:
            while (item := await self._outbox.get()) is not None:
                if isinstance(item, TridentError):
                    await abort(context, item)
                await context.write(item)
        finally:
            # Client gone, stream aborted, or all done: cancel whatever still runs.
            self._reader.cancel()
            for task in list(self._tasks):
                task.cancel()

    def stop_reading(self) -> None:
        """Take no more requests; finish those in flight, then end the stream (status OK)."""
        self._stopping = True
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self, frames: AsyncIterator[InferRequestFrame]) -> None:
        try:
            try:
                async for msg, raw in frames:
                    task = asyncio.ensure_future(self._handle(msg, raw))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
            while self._tasks:
                await asyncio.wait(list(self._tasks))
        finally:
            self._outbox.put_nowait(None)

    # ------------------------------------------------------------------ one request

    def _send_error(self, error: TridentError, response: bytes) -> None:
        self._outbox.put_nowait(error if self._close_on_error else response)

    async def _handle(self, msg: gs.ModelInferRequest, raw: Sequence[bytes | memoryview]) -> None:
        request: InferenceRequest | None = None
        try:
            try:
                traced_from = time.monotonic_ns() if self._tracer.enabled else 0
                request = decode_infer_request(msg, raw)
                if traced_from:
                    request.trace = begin_trace(
                        self._tracer, request.model_name, "GRPC_WAITREAD", traced_from
                    )
                decoupled = self._queries.is_decoupled(request.model_name, msg.model_version)
            except TridentError as exc:
                await self._run_ordered(None, exc, msg.id)
                return
            if decoupled:
                await self._run_decoupled(request, _wants_empty_final(msg))
            else:
                await self._run_ordered(request, None, msg.id)
        except asyncio.CancelledError:
            if request is not None:
                request.cancellation.cancel()
            raise
        except Exception as exc:
            error = unexpected("ModelStreamInfer", exc)
            self._send_error(error, encode_stream_error(error.message, msg.id).SerializeToString())

    async def _run_ordered(
        self, request: InferenceRequest | None, error: TridentError | None, request_id: str
    ) -> None:
        """Run a non-decoupled request (or report `error`), queueing the outcome after the
        previous ordered request's. The place in line is taken before inference starts, so
        requests still run concurrently."""
        previous = self._previous_ordered
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._previous_ordered = mine
        try:
            item = b""
            if request is not None:
                try:
                    response = await self._inference.infer(request)
                    if request.trace is None:
                        item = write_stream_response(response, True)
                    else:
                        item = send_traced(request.trace, "GRPC", _final_response, response)
                except TridentError as exc:
                    error = exc
            if previous is not None:
                await previous
            if error is not None:
                self._send_error(
                    error, encode_stream_error(error.message, request_id).SerializeToString()
                )
            else:
                self._outbox.put_nowait(item)
        finally:
            mine.set_result(None)

    async def _run_decoupled(self, request: InferenceRequest, send_empty_final: bool) -> None:
        try:
            async for response in self._inference.infer_stream(request):
                if response.error is not None:
                    error = encode_stream_error(
                        response.error.message,
                        response.id,
                        response.model_name,
                        response.model_version,
                        final=response.final,
                    )
                    self._send_error(response.error, error.SerializeToString())
                elif is_empty_final(response):
                    # A flag-only "done": sent only when the client asked for it.
                    if send_empty_final:
                        self._outbox.put_nowait(write_stream_response(response, True))
                else:
                    self._outbox.put_nowait(write_stream_response(response, response.final))
        except TridentError as exc:
            self._send_error(exc, encode_stream_error(exc.message, request.id).SerializeToString())
        finally:
            if request.trace is not None:  # its responses are written: no send stages
                request.trace.finish()


def _final_response(response: InferenceResponse) -> bytes:
    return write_stream_response(response, True)
