"""The model process of an isolated Python model instance (Triton's "stub").

Started by the server as `python -m trident.backends.python.isolation.stub FD`, where FD is its
end of a socket pair. It loads the model with the same code as the in-process backend
(PythonModelInstance), then serves frames (wire.py): a reader thread reads the socket, the main
thread runs `execute` (one batch at a time, as in the server), and an event loop thread runs
async models and the BLS calls, which go back to the server over the same socket.

Whatever the model does (os._exit, a segfault, an endless loop) ends or hangs this process only;
the server sees the socket close, fails the requests this process held and starts a new one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trident.backends.base import ComputeTiming, InstanceContext
from trident.runtime.core.in_flight import InFlightRequest, validated
from trident.runtime.errors import ModelExecutionError, ModelLoadError, TridentError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceRequest as RuntimeRequest
from trident.runtime.types import InferenceResponse as RuntimeResponse

from . import shm, wire
from .wire import Flag, Kind


def read_frame(sock: socket.socket) -> tuple[int, int, int, bytes] | None:
    """One whole frame from a blocking socket; None at end of stream."""
    header = _read_exactly(sock, wire.HEADER.size)
    if header is None:
        return None
    kind, flags, _, tag, length = wire.HEADER.unpack(header)
    if length > wire.MAX_PAYLOAD_BYTES:
        raise ValueError(f"frame payload of {length} bytes is over the limit")
    payload = _read_exactly(sock, length) if length else b""
    if payload is None:
        return None
    return kind, flags, tag, payload


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


#: Bytes asked of one socket read. Frames carry metadata only (tensors travel through shared
#: memory), and `recv(n)` allocates n bytes first: a megabyte per read costs more than the read.
_READ_SIZE = 64 * 1024


class SocketFrames:
    """Frames from a blocking socket, read in as few system calls as possible (a header and
    its payload usually arrive in one `recv`)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def next(self, poll_s: float = 0.0) -> tuple[int, int, int, bytearray] | None:
        """The next whole frame; None at end of stream. Call from one thread at a time. With
        `poll_s`, poll the socket that long before sleeping in `recv` (see `busy_poll_us` in
        settings.py)."""
        buffer = self._buffer
        while True:
            if len(buffer) >= wire.HEADER.size:
                kind, flags, _, tag, length = wire.HEADER.unpack_from(buffer)
                if length > wire.MAX_PAYLOAD_BYTES:
                    raise ValueError(f"frame payload of {length} bytes is over the limit")
                end = wire.HEADER.size + length
                if len(buffer) >= end:
                    # A bytearray of its own: tensors in it are writable arrays for the model.
                    payload = buffer[wire.HEADER.size : end]
                    del buffer[:end]
                    return kind, flags, tag, payload
            chunk = self._poll(poll_s) if poll_s else self._sock.recv(_READ_SIZE)
            if not chunk:
                return None
            buffer += chunk

    def _poll(self, poll_s: float) -> bytes:
        """Read without sleeping for up to `poll_s`, then sleep in `recv` as usual."""
        sock = self._sock
        until = time.monotonic() + poll_s
        while True:
            try:
                return sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                if time.monotonic() >= until:
                    return sock.recv(_READ_SIZE)


class Channel:
    """This process's end of the socket and its ring to the server; one sender at a time."""

    def __init__(self, sock: socket.socket, to_server: shm.RingWriter) -> None:
        self.sock = sock
        self.ring = to_server
        # Re-entrant: a log record emitted while a frame is being sent must not deadlock.
        self.lock = threading.RLock()

    def send(self, kind: Kind, tag: int = 0, payload: bytes = b"", flags: int = 0) -> None:
        with self.lock:
            self.sock.sendall(wire.frame(kind, tag, payload, flags))

    def send_responses(
        self, kind: Kind, tag: int, responses: list[RuntimeResponse], flags: int = 0
    ) -> None:
        with self.lock:  # reserve, write and send in one go: blocks reach the server in order
            payload, _ = wire.encode_responses(responses, self.ring)
            self.sock.sendall(wire.frame(kind, tag, payload, flags))

    def send_request(self, tag: int, request: RuntimeRequest, flags: int) -> None:
        with self.lock:
            payload, _ = wire.encode_requests(
                [(tag, request)], self.ring, request.model_version or -1
            )
            self.sock.sendall(wire.frame(Kind.BLS_REQUEST, tag, payload, flags))


@dataclass
class _Batch:
    """Requests of one EXECUTE frame: their inputs' block is freed once all of them ended."""

    block: shm.Block | None
    remaining: int
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Responder:
    """A request's responder in this process: responses go to the server as RESPONSE frames."""

    __slots__ = ("_batch", "_done", "_stub", "tag")

    def __init__(self, stub: Stub, tag: int, batch: _Batch) -> None:
        self._stub = stub
        self.tag = tag
        self._batch = batch
        self._done = False

    def send(self, response: RuntimeResponse) -> None:
        if self._done:
            return
        self._stub.channel.send_responses(
            Kind.RESPONSE, self.tag, [response], Flag.FINAL if response.final else 0
        )
        if response.final:
            self.finish()

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._stub.finish_request(self.tag, self._batch)


class Stub:
    """The model process: one model instance, served over the channel."""

    def __init__(self, sock: socket.socket, init: dict[str, Any]) -> None:
        prefix = init["prefix"]
        self.channel = Channel(
            sock,
            shm.RingWriter(shm.open_segment(prefix + "-c2p", 0), prefix + "-c"),
        )
        self.from_server = shm.RingReader(shm.open_segment(prefix + "-p2c", 0), prefix + "-p")
        self.init = init
        #: How long the main thread polls for the next batch before sleeping (busy_poll_us).
        self.busy_poll_s = float(init.get("busy_poll_s", 0.0))
        #: Whether the last batch asked for polling (wire.Flag.POLL).
        self.poll_next = False
        self.frames = SocketFrames(sock)
        self.jobs: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self.open_requests: dict[int, InFlightRequest] = {}
        self.open_lock = threading.Lock()
        self.calls: dict[int, Any] = {}
        self.call_ids = itertools.count(1)
        #: Held by whoever reads the socket: the main thread, until the reader thread starts.
        self.read_lock = threading.Lock()
        self.reader_lock = threading.Lock()
        self.reader_started = False
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="model-loop", daemon=True).start()
        self.instance: Any = None

    # ----------------------------------------------------------------------------- loading

    def load(self) -> dict[str, Any]:
        from trident.backends.python.backend import PythonModelInstance

        init = self.init
        config = mc.ModelConfig()
        config.ParseFromString(bytes.fromhex(init["config"]))
        context = InstanceContext(
            config=config,
            model_name=init["model_name"],
            model_version=init["model_version"],
            model_dir=Path(init["model_dir"]),
            version_dir=Path(init["version_dir"]),
            instance_name=init["instance_name"],
            kind=init["kind"],
            device_id=init["device_id"],
            instance_index=init["instance_index"],
            loop=self.loop,
            infer=self.remote_infer,
            stream_infer=self.remote_stream,
            config_json=init["config_json"],
        )
        self.instance = PythonModelInstance(context)
        return {"pid": os.getpid(), "is_async": self.instance.is_async}

    # ----------------------------------------------------------------------------- reading

    def start_reader(self) -> None:
        """From the first BLS call on, a thread of its own reads the channel: the main thread
        may then block inside `execute` waiting for a BLS response that someone must read."""
        with self.reader_lock:
            if self.reader_started:
                return
            self.reader_started = True
        threading.Thread(target=self.read_forever, name="channel-reader", daemon=True).start()

    def read_forever(self) -> None:
        """The reader thread: holds the read lock for good, decodes every frame in arrival
        order (ring blocks are opened in the order they were written) and hands batches to the
        main thread."""
        with self.read_lock:
            self._read_until_closed()

    def _read_until_closed(self) -> None:
        try:
            while True:
                frame = self.frames.next()
                if frame is None:
                    break
                self.dispatch(*frame)
        except BaseException as exc:  # a broken channel: nothing left to serve
            print(f"isolated model process: channel failed: {exc!r}", file=sys.stderr)
        # The server went away (or closed us): no one is left to answer.
        os._exit(0)

    def dispatch(self, kind: int, flags: int, tag: int, payload: bytearray) -> None:
        if kind == Kind.EXECUTE:
            self.poll_next = bool(flags & Flag.POLL)
            decoded, block = wire.decode_requests(payload, self.from_server, copy=False)
            batch = _Batch(block, len(decoded))
            requests = []
            with self.open_lock:
                for item in decoded:
                    # The server sent the version it resolved as the request's version.
                    flight = validated(
                        item.request,
                        item.request.model_version,
                        _Responder(self, item.tag, batch),
                    )
                    self.open_requests[item.tag] = flight
                    requests.append(flight)
            if not requests and block is not None:
                self.from_server.release(block)
            self.jobs.put((tag, requests))
        elif kind == Kind.CANCEL:
            with self.open_lock:
                request = self.open_requests.get(tag)
            if request is not None:
                request.cancellation.cancel()
        elif kind == Kind.BLS_RESPONSE:
            if flags & Flag.END:
                responses: list[RuntimeResponse] | None = None
            else:
                responses = wire.decode_responses(payload, self.from_server)
            self.loop.call_soon_threadsafe(self._deliver, tag, responses)
        elif kind == Kind.FINALIZE:
            self.jobs.put((-1, None))

    def finish_request(self, tag: int, batch: _Batch) -> None:
        with self.open_lock:
            self.open_requests.pop(tag, None)
        with batch.lock:
            batch.remaining -= 1
            done = batch.remaining == 0
        if done and batch.block is not None:
            self.from_server.release(batch.block)

    # ----------------------------------------------------------------------------- executing

    def serve(self) -> None:
        """The main thread: read frames and run batches itself (one thread, no hand-off per
        request) until a BLS call starts the reader thread; then run the batches it queues.
        Runs until FINALIZE."""
        while not self.reader_started:
            with self.read_lock:  # decode under the lock: frames are decoded in order
                if self.reader_started:
                    break
                try:
                    frame = self.frames.next(self.busy_poll_s if self.poll_next else 0.0)
                except OSError:
                    frame = None
                if frame is None:
                    os._exit(0)  # the server went away
                self.dispatch(*frame)
            self._run_queued()
        while True:
            batch_id, requests = self.jobs.get()
            if batch_id < 0:
                self.finalize()
                return
            self.execute(batch_id, requests)

    def _run_queued(self) -> None:
        while True:
            try:
                batch_id, requests = self.jobs.get_nowait()
            except queue.Empty:
                return
            if batch_id < 0:
                self.finalize()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
            self.execute(batch_id, requests)

    def execute(self, batch_id: int, requests: list[InFlightRequest]) -> None:
        try:
            result = self.instance.execute(requests, ComputeTiming())
            if asyncio.iscoroutine(result):
                result = asyncio.run_coroutine_threadsafe(result, self.loop).result()
        except BaseException as exc:  # the model's failure: the server fails the batch
            error = (
                exc
                if isinstance(exc, TridentError)
                else ModelExecutionError(f"{type(exc).__name__}: {exc}")
            )
            self.channel.send(Kind.EXEC_DONE, batch_id, wire.encode_error(error), Flag.FAILED)
            self._finish_all(requests)
            return
        if result is None:
            self.channel.send(Kind.EXEC_DONE, batch_id)
            return
        self.channel.send_responses(Kind.EXEC_DONE, batch_id, result, Flag.RESPONSES)
        self._finish_all(requests)

    def _finish_all(self, requests: list[InFlightRequest]) -> None:
        for request in requests:
            request.responder.finish()

    def finalize(self) -> None:
        if self.instance is not None:
            self.instance.close()
        self.channel.send(Kind.FINALIZED)

    # ----------------------------------------------------------------------------- BLS

    async def remote_infer(self, request: RuntimeRequest) -> RuntimeResponse:
        """The InstanceContext's `infer`: the server runs the request and sends the response."""
        self.start_reader()
        call_id = next(self.call_ids)
        future: asyncio.Future[list[RuntimeResponse] | None] = self.loop.create_future()
        self.calls[call_id] = future
        try:
            self.channel.send_request(call_id, request, 0)
            responses = await future
        except asyncio.CancelledError:
            self.channel.send(Kind.BLS_CANCEL, call_id)
            raise
        finally:
            self.calls.pop(call_id, None)
        if not responses:
            raise ModelExecutionError(f"BLS call to '{request.model_name}' got no response")
        response = responses[0]
        if response.error is not None:
            raise response.error
        return response

    async def remote_stream(self, request: RuntimeRequest) -> AsyncIterator[RuntimeResponse]:
        """The InstanceContext's `stream_infer`: responses as the server relays them."""
        self.start_reader()
        call_id = next(self.call_ids)
        arrived: asyncio.Queue[list[RuntimeResponse] | None] = asyncio.Queue()
        self.calls[call_id] = arrived
        ended = False
        try:
            self.channel.send_request(call_id, request, Flag.STREAM)
            while True:
                responses = await arrived.get()
                if responses is None:
                    ended = True
                    return
                for response in responses:
                    yield response
                    if response.final:
                        ended = True
                        return
        finally:
            self.calls.pop(call_id, None)
            if not ended:
                self.channel.send(Kind.BLS_CANCEL, call_id)

    def _deliver(self, call_id: int, responses: list[RuntimeResponse] | None) -> None:
        waiter = self.calls.get(call_id)
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(responses)
        elif isinstance(waiter, asyncio.Queue):
            waiter.put_nowait(responses)


class _ChannelLogHandler(logging.Handler):
    """Sends this process's log records to the server's log, keeping their file and line."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = wire.encode_log(
                record.name, record.pathname, record.lineno, record.getMessage()
            )
            self._channel.send(Kind.LOG, 0, payload, min(record.levelno // 10, 255))
        except Exception:  # a log line must never fail the model
            self.handleError(record)


def auto_complete(init: dict[str, Any]) -> dict[str, Any]:
    """Run the model's `auto_complete_config` here, so a model that ends its process at import
    cannot end the server's."""
    from trident.backends.python.backend import auto_complete_here

    config = mc.ModelConfig()
    config.ParseFromString(bytes.fromhex(init["config"]))
    auto_complete_here(config, Path(init["model_dir"]))
    return {"config": config.SerializeToString().hex()}


def main(argv: list[str]) -> None:
    # The server decides when this process ends: Ctrl-C in its terminal must not reach models.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    first = read_frame(sock)
    if first is None or first[0] != Kind.INIT:
        os._exit(2)
    init = json.loads(first[3])
    logging.getLogger().setLevel(init.get("log_level", logging.INFO))
    if init.get("mode") == "auto_complete":
        try:
            reply = auto_complete(init)
        except BaseException as exc:
            sock.sendall(wire.frame(Kind.LOAD_FAILED, 0, _load_error(exc).encode()))
        else:
            sock.sendall(wire.frame(Kind.READY, 0, json.dumps(reply).encode()))
        sock.close()
        os._exit(0)
    stub = Stub(sock, init)
    logging.getLogger().addHandler(_ChannelLogHandler(stub.channel))
    try:
        facts = stub.load()
    except BaseException as exc:
        stub.channel.send(Kind.LOAD_FAILED, 0, _load_error(exc).encode())
        os._exit(0)
    stub.channel.send(Kind.READY, 0, json.dumps(facts).encode())
    try:
        stub.serve()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Threads the model started must not keep a finalized process alive.
        os._exit(0)


def _load_error(exc: BaseException) -> str:
    if isinstance(exc, (ModelLoadError, TridentError)):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    main(sys.argv)
