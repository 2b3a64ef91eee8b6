"""Hostile clients against the native gRPC server: each attack of docs/grpc.md ("Limits") played
with raw HTTP/2 frames over a plain socket. Each test checks that the attacker is stopped (its
stream or connection ends with the documented error), that what the server holds for it stays
bounded (its connection's counters, read on the server's loop), that calls on other connections
are answered promptly meanwhile, and, where one stream's error must not cost the connection, that
good calls on the attacker's own connection still work."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import grpc
import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.helpers import running_server
from trident.runtime.frontends.grpc.http2 import frames as codes
from trident.runtime.frontends.grpc.http2.connection import Http2Connection
from trident.runtime.frontends.grpc.native.server import NativeGrpcServer
from trident.runtime.frontends.grpc.server import GrpcFrontend
from trident.runtime.protocol import grpc_service_pb2 as gs

from .grpc_support import serving_test_models, write_test_models

MESSAGE_LIMIT = 16 * 1024 * 1024
WRITE_LIMIT = 1024 * 1024
#: How long a good call on another connection may take while an attack runs (generous: the
#: machine running the tests may be busy; the attacks measured before these limits stalled the
#: server for seconds to minutes).
PROMPT = 3.0

INFER = "/inference.GRPCInferenceService/ModelInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving_test_models(
        tmp_path_factory,
        extra_models=("expand",),
        grpc_max_receive_message_size=MESSAGE_LIMIT,
        grpc_max_write_buffer_size=WRITE_LIMIT,
    ) as running:
        yield running


# ----------------------------------------------------------------------------- helpers


def native_server(server) -> NativeGrpcServer:
    (frontend,) = [f for f in server.server._frontends if isinstance(f, GrpcFrontend)]
    assert isinstance(frontend._server, NativeGrpcServer)
    return frontend._server


def on_loop(server, function: Callable[[], Any]) -> Any:
    """Run `function` on the server's event loop (where its state may be read safely)."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(function())
        except BaseException as exc:  # handed to the test thread
            future.set_exception(exc)

    server.loop.call_soon_threadsafe(run)
    return future.result(10)


def find_connection(server, address: str) -> Http2Connection | None:
    """The server's side of the connection from `address` (call on the server's loop)."""
    found = [c for c in native_server(server)._connections if c.peer == address]
    return found[0] if found else None


def connection_of(server, client: RawClient) -> Http2Connection:
    """The server's side of `client`'s connection (call on the server's loop, once
    `accepted` says the server has it)."""
    connection = find_connection(server, client.address)
    assert connection is not None
    return connection


def accepted(server, client: RawClient) -> bool:
    """Wait until the server has accepted `client`'s connection."""
    return wait_until(lambda: on_loop(server, lambda: find_connection(server, client.address)))


def gone(server, addresses: list[str]) -> bool:
    """Wait until the server has dropped the connections from `addresses`."""
    return wait_until(
        lambda: on_loop(server, lambda: all(find_connection(server, a) is None for a in addresses))
    )


def assert_responsive(server) -> float:
    """A good call on a fresh connection is answered promptly; returns how long it took."""
    started = time.monotonic()
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.is_server_live(client_timeout=PROMPT)
        values = np.arange(4, dtype=np.float32).reshape(1, 4)
        tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(values)
        result = client.infer("ident", [tensor], client_timeout=PROMPT)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
    elapsed = time.monotonic() - started
    assert elapsed < PROMPT, f"a good call took {elapsed:.2f} s"
    return elapsed


def while_attacking(server, attack: Callable[[], None]) -> None:
    """Run `attack` in a thread and check, while it runs, that other clients are served."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            attack()
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    probes = 0
    while thread.is_alive() or probes == 0:
        assert_responsive(server)
        probes += 1
    thread.join(30)
    if errors:
        raise errors[0]


def framed(message: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(message).to_bytes(4, "big") + message


def ident_request() -> bytes:
    request = gs.ModelInferRequest(model_name="ident")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones(4, dtype=np.float32).tobytes())
    return request.SerializeToString()


class RawClient:
    """An HTTP/2 client that sends whatever frames it is told to, over a plain socket."""

    def __init__(self, url: str, receive_buffer: int | None = None) -> None:
        host, port = url.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # a client that reads nothing: keep the kernel's share small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        local = self.sock.getsockname()
        self.address = f"ipv4:{local[0]}:{local[1]}"
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.next_stream = 1
        self.inbox = bytearray()
        self.frames: list[Frame] = []
        self.closed = False
        self.sock.sendall(codes.PREFACE + SettingsFrame(0).serialize())

    def close(self) -> None:
        self.sock.close()

    def new_stream(self) -> int:
        stream_id = self.next_stream
        self.next_stream += 2
        return stream_id

    def headers_frame(
        self,
        stream_id: int,
        path: str,
        extra: Iterable[tuple[bytes, bytes]] = (),
        end_stream: bool = False,
        end_headers: bool = True,
    ) -> HeadersFrame:
        block = self.encoder.encode(
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", b"localhost"),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                *extra,
            ]
        )
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(stream_id, block, flags=flags)

    def send(self, *frames: Frame | bytes) -> bool:
        """Send frames; False once the server has closed the connection."""
        wire = b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        try:
            self.sock.sendall(wire)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True
        return not self.closed

    def call(
        self, path: str, message: bytes, extra: Iterable[tuple[bytes, bytes]] = ()
    ) -> dict[str, str]:
        """One unary call on this connection; its response headers and trailers."""
        stream_id = self.new_stream()
        chunks = [message[start : start + 16384] for start in range(0, len(message), 16384)]
        data = [DataFrame(stream_id, chunk) for chunk in chunks or [b""]]
        data[-1].flags.add("END_STREAM")
        self.send(self.headers_frame(stream_id, path, extra), *data)
        return self.answer(stream_id)

    def answer(self, stream_id: int, timeout: float = 10.0) -> dict[str, str]:
        """The response headers and trailers of `stream_id`, once it has ended."""
        received: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.read(deadline):
                if frame.stream_id != stream_id:
                    continue
                if isinstance(frame, HeadersFrame):
                    received.update(
                        (name.decode(), value.decode())
                        for name, value in self.decoder.decode(frame.data, raw=True)
                    )
                if isinstance(frame, RstStreamFrame):
                    received["rst"] = str(frame.error_code)
                ended = "END_STREAM" in frame.flags or isinstance(frame, RstStreamFrame)
                if ended and ("grpc-status" in received or "rst" in received):
                    return received

    def read(self, deadline: float) -> list[Frame]:
        """Frames that arrive before `deadline` (at least one, unless the connection ends)."""
        while True:
            found = self._parse()
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from the server")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                raise ConnectionError("the server closed the connection")
            self.inbox += data

    def read_until_closed(self, timeout: float = 10.0) -> list[Frame]:
        """Every frame up to the end of the connection."""
        deadline = time.monotonic() + timeout
        found: list[Frame] = []
        try:
            while True:
                found += self.read(deadline)
        except ConnectionError:
            return found

    def _parse(self) -> list[Frame]:
        found = []
        while len(self.inbox) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self.inbox[:9])))
            if len(self.inbox) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self.inbox[9 : 9 + length])))
            del self.inbox[: 9 + length]
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                self.sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
            found.append(frame)
        self.frames += found
        return found


def goaway_code(frames: list[Frame]) -> int:
    (goaway,) = [frame for frame in frames if isinstance(frame, GoAwayFrame)]
    return int(goaway.error_code)


def closed_for(caplog: pytest.LogCaptureFixture, frames: list[Frame], code: int, why: str) -> bool:
    """Whether the server ended the connection with GOAWAY(code) for `why`. A server that closes
    while the attacker's frames still wait unread makes the kernel reset the connection, and the
    GOAWAY may be lost on the way: then the server's log says it."""
    goaways = [frame for frame in frames if isinstance(frame, GoAwayFrame)]
    if goaways:
        return all(goaway.error_code == code for goaway in goaways)
    return any(f"HTTP/2 error {code}: {why}" in record.getMessage() for record in caplog.records)


def status(answer: dict[str, str]) -> grpc.StatusCode:
    code = int(answer["grpc-status"])
    return next(item for item in grpc.StatusCode if item.value[0] == code)


# ----------------------------------------------------------------------------- the attacks


def test_the_limits_are_advertised(server):
    client = RawClient(server.grpc_url)
    settings = next(f for f in client.read(time.monotonic() + 10) if isinstance(f, SettingsFrame))
    client.close()
    assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 1024
    assert settings.settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == 16 * 1024


def test_an_endless_continuation_sequence_is_cut_off(server, caplog):
    client = RawClient(server.grpc_url)
    stream_id = client.new_stream()
    client.send(client.headers_frame(stream_id, INFER, end_headers=False))
    sent = 0
    fragment = ContinuationFrame(stream_id, b"\x40\x01a\x01b" * 3000)  # 15 KB of headers
    while sent < 64 * 1024 * 1024 and client.send(fragment):
        sent += len(fragment.data)
    frames = client.read_until_closed()
    client.close()
    assert closed_for(caplog, frames, codes.ENHANCE_YOUR_CALM, "header block larger than 16384")
    assert sent < 8 * 1024 * 1024  # cut off long before: the socket buffers hold the rest
    assert_responsive(server)


def test_rapid_reset_is_stopped_with_enhance_your_calm_and_leaves_nothing_behind(server, caplog):
    before = on_loop(server, lambda: len(native_server(server).calls))
    outcomes: list[bool] = []
    addresses: list[str] = []

    def attack() -> None:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            client = RawClient(server.grpc_url)
            addresses.append(client.address)
            for _ in range(100):  # 100 batches of 20 HEADERS, DATA, RST_STREAM
                batch: list[Frame] = []
                for _ in range(20):
                    stream_id = client.new_stream()
                    batch.append(client.headers_frame(stream_id, INFER))
                    batch.append(DataFrame(stream_id, framed(ident_request())[:20]))
                    batch.append(RstStreamFrame(stream_id, error_code=codes.CANCEL))
                if not client.send(*batch):
                    break
            frames = client.read_until_closed()
            outcomes.append(
                closed_for(caplog, frames, codes.ENHANCE_YOUR_CALM, "too many stream resets")
            )
            client.close()

    while_attacking(server, attack)
    assert outcomes and all(outcomes)
    # The attacker's connections and calls are gone, not kept.
    assert gone(server, addresses)
    assert wait_until(lambda: on_loop(server, lambda: len(native_server(server).calls)) == before)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("flood", ["ping", "settings"])
def test_a_control_frame_flood_from_a_client_that_never_reads_is_cut_off(server, flood):
    addresses: list[str] = []

    def attack() -> None:
        client = RawClient(server.grpc_url, receive_buffer=4096)
        addresses.append(client.address)
        if flood == "ping":
            frame = PingFrame(0, opaque_data=b"12345678").serialize()
        else:
            frame = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535})
            frame = frame.serialize()
        batch = frame * 2000
        sent = 0
        client.sock.settimeout(5)
        while sent < 2_000_000 and client.send(batch):
            sent += 2000
        client.close()
        assert client.closed, "the server never closed the connection"

    while_attacking(server, attack)
    assert gone(server, addresses)


def test_settings_frames_do_not_slow_a_connection_with_many_idle_streams(server):
    client = RawClient(server.grpc_url)
    idle = [client.new_stream() for _ in range(1000)]
    client.send(*(client.headers_frame(stream_id, INFER) for stream_id in idle))
    flood = b"".join(
        SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: size}).serialize()
        for size in (65535, 1 << 20) * 2500
    )
    client.send(flood)
    started = time.monotonic()
    answer = client.call(LIVE, framed(gs.ServerLiveRequest().SerializeToString()))
    assert status(answer) == grpc.StatusCode.OK
    assert time.monotonic() - started < PROMPT
    acks = [f for f in client.frames if isinstance(f, SettingsFrame) and "ACK" in f.flags]
    assert len(acks) >= 5000  # all answered (the client read them)

    def untouched() -> bool:
        connection = connection_of(server, client)
        return all(stream.initial_window == 65535 for stream in connection.streams.values())

    assert on_loop(server, untouched)  # no SETTINGS walked the idle streams
    client.close()


def test_streams_past_the_concurrency_limit_are_refused(server):
    client = RawClient(server.grpc_url)
    streams = [client.new_stream() for _ in range(1025)]
    client.send(*(client.headers_frame(stream_id, INFER) for stream_id in streams))
    answer = client.answer(streams[-1])
    assert answer["rst"] == str(codes.REFUSED_STREAM)
    # The connection goes on: a stream ends, and a new one is served.
    client.send(DataFrame(streams[0], framed(ident_request()), flags=["END_STREAM"]))
    assert status(client.answer(streams[0])) == grpc.StatusCode.OK
    answer = client.call(LIVE, framed(gs.ServerLiveRequest().SerializeToString()))
    assert status(answer) == grpc.StatusCode.OK
    client.close()


def test_a_client_that_opens_its_window_but_never_reads_is_not_read_from(server):
    client = RawClient(server.grpc_url, receive_buffer=4096)
    assert accepted(server, client)
    client.send(
        SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: (1 << 31) - 1}),
        WindowUpdateFrame(0, window_increment=(1 << 31) - 1 - 65535),
    )
    request = gs.ModelInferRequest(model_name="expand")
    request.inputs.add(name="IN", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([1 << 20], dtype=np.int32).tobytes())
    body = framed(request.SerializeToString())

    def ask(count: int) -> list[int]:
        streams = [client.new_stream() for _ in range(count)]
        client.send(
            *(
                frame
                for stream_id in streams
                for frame in (
                    client.headers_frame(stream_id, INFER),
                    DataFrame(stream_id, body, flags=["END_STREAM"]),
                )
            )
        )
        return streams

    def state() -> tuple[int, int, bool]:
        connection = connection_of(server, client)
        return connection.unsent_bytes, connection._last_stream_id, connection._reading_paused

    # Answers of a MiB each until they are more than the socket buffers and the limit take.
    first: list[int] = []
    while not on_loop(server, state)[2]:
        assert len(first) < 64, "reading never paused"
        first += ask(8)
        wait_until(lambda: on_loop(server, state)[2], timeout=1.0)
    rest = ask(24)  # asked while the server is not reading
    held: list[int] = []
    for _ in range(20):
        unsent, last_read, _ = on_loop(server, state)
        held.append(unsent)
        assert last_read == first[-1]  # none of the later requests was read
        time.sleep(0.02)
    assert_responsive(server)
    # What it holds: the answers of the calls it had accepted, nothing more.
    assert max(held) <= WRITE_LIMIT + len(first) * (1 << 20), held
    # Once the client reads, the server reads again and answers every call.
    for stream_id in first + rest:
        assert status(client.answer(stream_id)) == grpc.StatusCode.OK
    client.close()
    assert gone(server, [client.address])


def test_a_gzip_bomb_is_stopped_at_the_message_limit_and_the_connection_goes_on(server):
    # 1 MB that inflates to 1 GiB: 1,024 copies of one flushed block of a MiB of zeros (the
    # trailer's checksum is wrong, but the server stops long before it).
    zeros = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    bomb = head + block * 1023 + compressor.flush()
    client = RawClient(server.grpc_url)

    def attack() -> None:
        answer = client.call(INFER, framed(bomb, compressed=True), [(b"grpc-encoding", b"gzip")])
        assert status(answer) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Decompressed message larger than max" in answer["grpc-message"]

    while_attacking(server, attack)
    assert status(client.call(INFER, framed(ident_request()))) == grpc.StatusCode.OK
    client.close()


def test_a_length_prefix_past_the_limit_is_refused_before_the_message_arrives(server):
    client = RawClient(server.grpc_url)
    stream_id = client.new_stream()
    prefix = b"\x00" + (1 << 30).to_bytes(4, "big")
    client.send(client.headers_frame(stream_id, INFER), DataFrame(stream_id, prefix + b"x" * 100))
    answer = client.answer(stream_id)  # no END_STREAM sent: answered from the prefix alone
    assert status(answer) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answer["grpc-message"] == (
        f"Received message larger than max ({1 << 30} vs. {MESSAGE_LIMIT})"
    )
    assert status(client.call(INFER, framed(ident_request()))) == grpc.StatusCode.OK
    client.close()


def test_a_message_streamed_on_without_end_stream_is_stopped(server):
    client = RawClient(server.grpc_url)
    stream_id = client.new_stream()
    client.send(client.headers_frame(stream_id, INFER))
    prefix = b"\x00" + (MESSAGE_LIMIT - 100).to_bytes(4, "big")
    client.send(DataFrame(stream_id, prefix))
    chunk = DataFrame(stream_id, b"\xff" * 16384).serialize()
    sent = 0
    for _ in range(MESSAGE_LIMIT // 16384 + 64):  # past the limit, never ending the stream
        if not client.send(chunk):
            break
        sent += 16384
    answer = client.answer(stream_id)
    # Answered without END_STREAM: the message ends inside what was sent, and the bytes after
    # it are no valid second message (0xff is no compressed flag).
    assert status(answer) == grpc.StatusCode.INTERNAL
    assert answer["grpc-message"] == "bad compressed flag 255"
    assert status(client.call(INFER, framed(ident_request()))) == grpc.StatusCode.OK
    client.close()


def test_incomplete_messages_on_many_streams_are_bounded_per_connection(server):
    native = native_server(server)
    limits = native.limits
    on_loop(
        server, lambda: setattr(native, "limits", replace(limits, max_held_request_bytes=4 << 20))
    )
    try:
        client = RawClient(server.grpc_url)
        prefix = b"\x00" + (2 << 20).to_bytes(4, "big")  # 2 MiB messages: under the limit
        streams = [client.new_stream() for _ in range(8)]
        for stream_id in streams:  # half of each message, never the rest
            client.send(client.headers_frame(stream_id, INFER), DataFrame(stream_id, prefix))
            for _ in range(64):
                client.send(DataFrame(stream_id, b"\x00" * 16384))
        # Four half messages (and their prefixes) pass the connection's 4 MiB: the call whose
        # data does so ends, the others keep what they hold.
        answer = client.answer(streams[3])
        assert status(answer) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more request data than this connection may hold" in answer["grpc-message"]

        def held() -> int:
            connection = connection_of(server, client)
            return int(connection.held_request_bytes)

        assert on_loop(server, held) <= 4 << 20
        assert status(client.call(LIVE, framed(b""))) == grpc.StatusCode.OK
        client.close()
        assert gone(server, [client.address])
    finally:
        on_loop(server, lambda: setattr(native, "limits", limits))


def test_sixteen_mib_of_zero_bytes_do_not_stall_the_server(server):
    client = RawClient(server.grpc_url)
    client.send(WindowUpdateFrame(0, window_increment=1 << 26))

    def attack() -> None:
        answer = client.call(INFER, framed(bytes(16 * 1024 * 1024)))
        assert status(answer) in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)

    while_attacking(server, attack)
    client.close()


def test_one_streams_bad_input_fails_that_stream_and_the_connection_goes_on(server):
    client = RawClient(server.grpc_url)
    live = framed(gs.ServerLiveRequest().SerializeToString())
    garbage_gzip = client.call(LIVE, framed(b"not gzip", True), [(b"grpc-encoding", b"gzip")])
    assert status(garbage_gzip) == grpc.StatusCode.INTERNAL
    assert "Decompression failed" in garbage_gzip["grpc-message"]
    garbage_deflate = client.call(LIVE, framed(b"zz", True), [(b"grpc-encoding", b"deflate")])
    assert status(garbage_deflate) == grpc.StatusCode.INTERNAL
    bad_timeout = client.call(LIVE, live, [(b"grpc-timeout", b"soon")])
    assert status(bad_timeout) == grpc.StatusCode.INTERNAL
    assert bad_timeout["grpc-message"] == "Error parsing 'grpc-timeout' metadata"
    # Not UTF-8: accepted, as grpc-core accepts it.
    not_utf8 = client.call(LIVE, live, [(b"x-meta", b"\xff\xfe caf\xe9")])
    assert status(not_utf8) == grpc.StatusCode.OK
    assert status(client.call(INFER, framed(ident_request()))) == grpc.StatusCode.OK
    assert not client.closed

    def held() -> int:
        connection = connection_of(server, client)
        return int(connection.held_request_bytes)

    assert on_loop(server, held) == 0  # every call gave back what it counted
    client.close()


def test_the_grpcio_server_gets_the_message_limit_too(tmp_path):
    write_test_models(tmp_path / "repo", tmp_path / "markers")
    with running_server(
        tmp_path / "repo",
        allow_http=False,
        grpc_implementation="grpcio",
        grpc_max_receive_message_size=64 * 1024,
    ) as running:
        data = np.zeros(32 * 1024, dtype=np.float32)  # 128 KiB
        tensor = grpcclient.InferInput("INPUT0", [data.size], "FP32")
        tensor.set_data_from_numpy(data)
        with grpcclient.InferenceServerClient(running.grpc_url) as client:
            with pytest.raises(Exception, match="Received message larger than max"):
                client.infer("any_fp32", [tensor])
            assert client.is_server_live()
