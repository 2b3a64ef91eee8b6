"""Trident's own time per request: from a ModelInfer call's bytes leaving the client to the
response's last byte arriving, over loopback TCP, with Trident in this process.

perf_analyzer's latency includes its own client work and the kernel's TCP path twice, which any
server pays and which on the 2-core machines is several hundred microseconds (a bare grpc.aio
echo server, doing nothing, manages about 2,000 calls/s at concurrency 1). To see what Trident
itself adds, this probe runs the real server (`TridentServer`, the native gRPC frontend) on an
event loop in this process and drives it with a minimal client on the same loop: requests are
encoded by the `h2` library before the clock starts, the clock stops when the frame ending the
response has arrived, and nothing else runs in between. What it times: the client's send and
receive system calls, the server's wake-up, read, HTTP/2 and protobuf decoding, validation,
scheduling, the model, the response's encoding and write.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events

from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.server import TridentServer
from trident.runtime.settings import ServerSettings

_HEADERS_FRAME = 0x1
_END_STREAM = 0x1
_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


def _ends_stream(data: bytes, stream_id: int) -> bool:
    """Whether `data` (whole frames) holds the HEADERS frame that ends `stream_id`."""
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        frame_type, flags = data[pos + 3], data[pos + 4]
        frame_stream = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        if frame_type == _HEADERS_FRAME and flags & _END_STREAM and frame_stream == stream_id:
            return True
        pos += 9 + length
    return False


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def time_calls(port: int, request: gs.ModelInferRequest, count: int) -> list[int]:
    """Durations (ns, in call order) of `count` ModelInfer calls made one after another."""
    loop = asyncio.get_running_loop()
    sock = _connect(port)
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    client.initiate_connection()
    await loop.sock_sendall(sock, client.data_to_send())
    body = request.SerializeToString()
    message = b"\x00" + len(body).to_bytes(4, "big") + body
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", _INFER_PATH),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    durations: list[int] = []
    try:
        for _ in range(count):
            stream_id = client.get_next_available_stream_id()
            client.send_headers(stream_id, headers)
            client.send_data(stream_id, message, end_stream=True)
            outgoing = client.data_to_send()
            received = b""
            start = time.perf_counter_ns()
            await loop.sock_sendall(sock, outgoing)
            while True:
                received += await loop.sock_recv(sock, 1 << 20)
                if _ends_stream(received, stream_id):
                    break
            durations.append(time.perf_counter_ns() - start)
            for event in client.receive_data(received):
                if isinstance(event, h2.events.StreamReset):
                    raise RuntimeError(f"the server reset the call: {event}")
                if isinstance(event, h2.events.DataReceived):  # open the server's window again
                    client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            acknowledgements = client.data_to_send()
            if acknowledgements:
                await loop.sock_sendall(sock, acknowledgements)
    finally:
        sock.close()
    return durations


async def _measure(repository: Path, request: gs.ModelInferRequest, count: int) -> list[int]:
    settings = ServerSettings(
        model_repositories=[repository],
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        grpc_address="127.0.0.1",
        allow_http=False,
        allow_metrics=False,
        log_info=False,
    )
    server = TridentServer(settings)
    await server.start()
    try:
        return await time_calls(server.grpc_port, request, count)
    finally:
        await server.stop()


def measure_in_server(
    repository: Path, request: gs.ModelInferRequest, count: int, warmup: int = 200
) -> list[int]:
    """Durations (ns, sorted) of `count` calls after `warmup`, on a fresh in-process server."""
    return sorted(_run(_measure(repository, request, count + warmup))[warmup:])


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._transport.write(data)  # type: ignore[attr-defined]


async def _echo_durations(size: int, count: int) -> list[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    sock = _connect(server.sockets[0].getsockname()[1])
    payload = b"x" * size
    durations = []
    try:
        for _ in range(count):
            start = time.perf_counter_ns()
            await loop.sock_sendall(sock, payload)
            received = 0
            while received < size:
                received += len(await loop.sock_recv(sock, 1 << 20))
            durations.append(time.perf_counter_ns() - start)
    finally:
        sock.close()
        server.close()
    return durations


def measure_echo_floor(size: int, count: int, warmup: int = 200) -> list[int]:
    """The probe's own floor: the same loop and client against an asyncio echo server that
    writes back what it reads (`size` bytes each way). Durations in ns, sorted."""
    return sorted(_run(_echo_durations(size, count + warmup))[warmup:])


def _run(coroutine: Coroutine[Any, Any, list[int]]) -> list[int]:
    """Run on uvloop, as `trident serve` does (plain asyncio without it)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is part of the test extra
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
