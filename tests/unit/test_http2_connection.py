"""The native gRPC server's HTTP/2 connection, driven by the `h2` library as an independent client
through an in-memory transport: settings, framing, flow control both ways, resets, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, SettingsFrame

from trident.runtime.frontends.grpc.http2 import frames
from trident.runtime.frontends.grpc.http2.connection import (
    CONNECTION_RECEIVE_WINDOW,
    MAX_RECEIVE_FRAME,
    RECEIVE_WINDOW,
    Http2Connection,
    Stream,
)
from trident.runtime.frontends.grpc.http2.header_block import HeaderDecoder, encode_headers

REQUEST_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/pkg.Service/Method"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
]
RESPONSE_HEADERS = encode_headers([(b":status", b"200"), (b"content-type", b"application/grpc")])
TRAILERS = encode_headers([(b"grpc-status", b"0")])


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high

    def get_write_buffer_size(self) -> int:
        return 0  # everything written is taken at once

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Recorder:
    """A stream handler that records what it is given."""

    def __init__(self, stream: Stream, headers: list[tuple[str, str]]) -> None:
        self.stream = stream
        self.headers = dict(headers)
        self.body = bytearray()
        self.ended = False
        self.reset = False

    def data_received(self, data: bytes) -> None:
        self.body += data

    def end_received(self) -> None:
        self.ended = True

    def reset_received(self) -> None:
        self.reset = True


class Peer:
    """A server connection and an h2 client wired to each other."""

    def __init__(self, initial_window: int | None = None) -> None:
        self.handlers: list[Recorder] = []
        self.transport = FakeTransport()
        self.server = Http2Connection(self._open, lambda connection: None)
        self.server.connection_made(self.transport)  # type: ignore[arg-type]
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.client = h2.connection.H2Connection(config=config)
        self.client.initiate_connection()
        if initial_window is not None:
            self.client.update_settings(
                {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window}
            )
        self.events: list[h2.events.Event] = []
        self.pump()

    def _open(self, connection: Http2Connection, stream: Stream, headers: Any) -> Recorder:
        handler = Recorder(stream, headers)
        self.handlers.append(handler)
        return handler

    def pump(self, chunk_size: int | None = None) -> None:
        """Move bytes both ways until neither side has anything to send."""
        while True:
            moved = False
            outgoing = self.client.data_to_send()
            if outgoing:
                moved = True
                step = chunk_size or len(outgoing)
                for start in range(0, len(outgoing), step):
                    self.server.data_received(outgoing[start : start + step])
            incoming = bytes(self.transport.data)
            self.transport.data.clear()
            if incoming:
                moved = True
                self.events += self.client.receive_data(incoming)
            if not moved:
                return

    def take(self, kind: type) -> list[Any]:
        found = [event for event in self.events if isinstance(event, kind)]
        self.events = [event for event in self.events if not isinstance(event, kind)]
        return found

    def request(self, body: bytes = b"", end: bool = True) -> int:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, REQUEST_HEADERS, end_stream=not body and end)
        if body:
            self.client.send_data(stream_id, body, end_stream=end)
        self.pump()
        return stream_id

    def respond(self, handler: Recorder, body: bytes) -> None:
        self.server.send_headers(handler.stream, RESPONSE_HEADERS)
        self.server.send_data(handler.stream, body)
        self.server.send_trailers(handler.stream, TRAILERS)
        self.server.flush()
        self.pump()

    def received_body(self, stream_id: int) -> bytes:
        return b"".join(
            event.data for event in self.events if isinstance(event, h2.events.DataReceived)
        )


def test_connecting_exchanges_settings_and_opens_large_receive_windows():
    peer = Peer()
    settings = peer.client.remote_settings
    assert settings.initial_window_size == RECEIVE_WINDOW
    assert settings.max_frame_size == MAX_RECEIVE_FRAME
    assert settings.enable_push == 0
    assert peer.client.outbound_flow_control_window == CONNECTION_RECEIVE_WINDOW
    assert peer.take(h2.events.SettingsAcknowledged)  # the server acknowledged the client's


def test_a_request_reaches_its_handler_however_the_bytes_are_split():
    peer = Peer()
    stream_id = peer.client.get_next_available_stream_id()
    peer.client.send_headers(stream_id, REQUEST_HEADERS)
    peer.client.send_data(stream_id, b"a" * 1000)
    peer.client.send_data(stream_id, b"b" * 10, end_stream=True)
    peer.pump(chunk_size=7)  # frames cut at every odd place
    (handler,) = peer.handlers
    assert handler.headers[":path"] == "/pkg.Service/Method"
    assert handler.body == b"a" * 1000 + b"b" * 10
    assert handler.ended


def test_a_response_arrives_with_its_trailers_in_one_write():
    peer = Peer()
    stream_id = peer.request(b"hello")
    handler = peer.handlers[0]
    peer.server.send_headers(handler.stream, RESPONSE_HEADERS)
    peer.server.send_data(handler.stream, b"world")
    peer.server.send_trailers(handler.stream, TRAILERS)
    assert not peer.transport.data  # nothing leaves before flush()
    peer.server.flush()
    peer.pump()
    (response,) = peer.take(h2.events.ResponseReceived)
    assert dict(response.headers)[":status"] == "200"
    assert peer.received_body(stream_id) == b"world"
    (trailers,) = peer.take(h2.events.TrailersReceived)
    assert dict(trailers.headers) == {"grpc-status": "0"}
    assert peer.take(h2.events.StreamEnded)
    assert stream_id not in peer.server.streams


def test_padded_data_and_headers_split_over_continuation_frames():
    transport = FakeTransport()
    handlers: list[Recorder] = []

    def open_stream(connection: Http2Connection, stream: Stream, headers: Any) -> Recorder:
        handlers.append(Recorder(stream, headers))
        return handlers[-1]

    server = Http2Connection(open_stream, lambda connection: None)
    server.connection_made(transport)  # type: ignore[arg-type]
    block = hpack.Encoder().encode([*REQUEST_HEADERS, ("x-long", "v" * 300)])
    headers = HeadersFrame(1, data=block[:100], flags=["PADDED"], pad_length=3)
    continuation = ContinuationFrame(1, data=block[100:200])
    last = ContinuationFrame(1, data=block[200:], flags=["END_HEADERS"])
    data = DataFrame(1, data=b"payload", flags=["PADDED", "END_STREAM"], pad_length=5)
    wire = frames.PREFACE + SettingsFrame(0).serialize()
    for frame in (headers, continuation, last, data):
        wire += frame.serialize()
    server.data_received(wire)
    (handler,) = handlers
    assert handler.headers["x-long"] == "v" * 300
    assert handler.body == b"payload"
    assert handler.ended


def test_a_response_larger_than_the_client_window_waits_for_window_updates():
    peer = Peer(initial_window=100)
    stream_id = peer.request(b"x")
    handler = peer.handlers[0]
    peer.respond(handler, b"r" * 250)
    assert peer.received_body(stream_id) == b"r" * 100
    assert not peer.take(h2.events.StreamEnded)  # the trailers wait behind the data
    peer.client.increment_flow_control_window(100, stream_id=stream_id)
    peer.pump()
    assert peer.received_body(stream_id) == b"r" * 200
    peer.client.increment_flow_control_window(1000, stream_id=stream_id)
    peer.pump()
    assert peer.received_body(stream_id) == b"r" * 250
    assert peer.take(h2.events.StreamEnded)


def test_the_connection_window_holds_every_stream_until_it_opens():
    peer = Peer(initial_window=1_000_000)
    first = peer.request(b"1")
    second = peer.request(b"2")
    size = 50_000  # two of these exceed the connection's default window of 65,535
    peer.respond(peer.handlers[0], b"a" * size)
    peer.respond(peer.handlers[1], b"b" * size)
    received = peer.take(h2.events.DataReceived)
    assert sum(len(event.data) for event in received) == frames.DEFAULT_WINDOW_SIZE
    assert all(len(event.data) <= frames.DEFAULT_MAX_FRAME_SIZE for event in received)
    peer.client.increment_flow_control_window(size)
    peer.pump()
    received += peer.take(h2.events.DataReceived)
    by_stream = {first: b"", second: b""}
    for event in received:
        by_stream[event.stream_id] += event.data
    assert by_stream == {first: b"a" * size, second: b"b" * size}
    assert len(peer.take(h2.events.StreamEnded)) == 2


def test_receive_windows_are_replenished_for_requests_larger_than_them():
    peer = Peer()
    stream_id = peer.client.get_next_available_stream_id()
    peer.client.send_headers(stream_id, REQUEST_HEADERS)
    chunk = b"z" * MAX_RECEIVE_FRAME
    sent = 0
    while sent < RECEIVE_WINDOW + 4 * MAX_RECEIVE_FRAME:  # more than one stream window
        assert peer.client.local_flow_control_window(stream_id) >= len(chunk)
        peer.client.send_data(stream_id, chunk)
        sent += len(chunk)
        peer.pump()
    peer.client.end_stream(stream_id)
    peer.pump()
    assert len(peer.handlers[0].body) == sent
    assert peer.handlers[0].ended


def test_ping_is_acknowledged():
    peer = Peer()
    peer.client.ping(b"12345678")
    peer.pump()
    (ack,) = peer.take(h2.events.PingAckReceived)
    assert ack.ping_data == b"12345678"


def test_a_client_reset_reaches_the_handler_and_later_sends_are_dropped():
    peer = Peer()
    stream_id = peer.request(b"x", end=False)
    handler = peer.handlers[0]
    peer.client.reset_stream(stream_id)
    peer.pump()
    assert handler.reset
    peer.respond(handler, b"late")
    assert not peer.take(h2.events.DataReceived)


def test_answering_before_the_request_ends_resets_the_rest_of_it():
    peer = Peer()
    stream_id = peer.request(b"partial", end=False)
    peer.respond(peer.handlers[0], b"early")
    (reset,) = peer.take(h2.events.StreamReset)
    assert reset.stream_id == stream_id
    assert reset.error_code == frames.NO_ERROR
    assert stream_id not in peer.server.streams


def test_a_client_that_is_not_http2_gets_goaway_and_is_disconnected():
    transport = FakeTransport()
    server = Http2Connection(lambda *args: Recorder(args[1], args[2]), lambda connection: None)
    server.connection_made(transport)  # type: ignore[arg-type]
    transport.data.clear()
    server.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.closed
    assert transport.data[3] == frames.GOAWAY
    assert frames.read_u32(bytes(transport.data), 13) == frames.PROTOCOL_ERROR


def test_go_away_lets_open_streams_finish_then_closes():
    peer = Peer()
    stream_id = peer.request(b"x")
    peer.server.go_away()
    peer.pump()
    (goaway,) = peer.take(h2.events.ConnectionTerminated)
    assert goaway.last_stream_id == stream_id
    assert not peer.transport.closed
    handler = peer.handlers[0]
    peer.server.send_headers(handler.stream, RESPONSE_HEADERS)
    peer.server.send_data(handler.stream, b"done")
    peer.server.send_trailers(handler.stream, TRAILERS)
    # (h2's client state machine takes nothing after GOAWAY, so read the bytes themselves.)
    assert peer.transport.closed
    assert b"done" in peer.transport.data


def test_drained_waits_until_pending_data_has_left():
    async def run() -> None:
        peer = Peer(initial_window=10)
        stream_id = peer.request(b"x", end=False)
        handler = peer.handlers[0]
        peer.server.send_headers(handler.stream, RESPONSE_HEADERS)
        peer.server.send_data(handler.stream, b"d" * 30)
        peer.server.flush()
        assert peer.server.write_blocked(handler.stream)
        waiter = asyncio.ensure_future(peer.server.drained(handler.stream))
        await asyncio.sleep(0)
        assert not waiter.done()
        peer.pump()
        peer.client.increment_flow_control_window(100, stream_id=stream_id)
        peer.pump()
        await asyncio.wait_for(waiter, 1)
        assert not peer.server.write_blocked(handler.stream)

    asyncio.run(run())


def test_cached_header_blocks_are_dropped_when_the_dynamic_table_changes():
    encoder = hpack.Encoder()
    decoder = HeaderDecoder(65536)
    assert decoder.decode(encoder.encode([("a", "1")])) == [("a", "1")]
    indexed = encoder.encode([("a", "1")])
    assert indexed == b"\xbe"  # one dynamic-table reference: cacheable
    assert decoder.decode(indexed) == [("a", "1")]
    assert decoder.decode(indexed) == [("a", "1")]
    decoder.decode(encoder.encode([("b", "2")]))  # a new entry shifts the indices
    assert decoder.decode(b"\xbe") == [("b", "2")]


@pytest.mark.parametrize(
    "headers",
    [[(b"grpc-status", b"0")], [(b":status", b"200"), (b"x-long", b"v" * 300)]],
)
def test_encoded_header_blocks_decode_with_hpack(headers):
    decoded = hpack.Decoder().decode(encode_headers(headers), raw=True)
    assert decoded == headers
