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
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from trident.runtime.frontends.grpc.http2 import frames
from trident.runtime.frontends.grpc.http2.connection import (
    CONNECTION_RECEIVE_WINDOW,
    MAX_RECEIVE_FRAME,
    RECEIVE_WINDOW,
    Http2Connection,
    Stream,
)
from trident.runtime.frontends.grpc.http2.header_block import HeaderDecoder, encode_headers
from trident.runtime.frontends.grpc.http2.limits import Http2Limits, ResetBudget

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
        self.aborted = False
        self.reading = True
        #: What the "kernel" has not taken: set > 0 to play a client that does not read.
        self.unsent = 0

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
        return self.unsent

    def abort(self) -> None:
        self.closed = self.aborted = True

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

    def __init__(self, initial_window: int | None = None, limits: Http2Limits | None = None):
        self.handlers: list[Recorder] = []
        self.transport = FakeTransport()
        self.server = Http2Connection(self._open, lambda connection: None, limits)
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


# ----------------------------------------------------------------------------- limits


def _raw_server(limits: Http2Limits, handlers: list[Recorder] | None = None) -> Peer:
    """A Peer whose client side is driven with raw frames (`send`) instead of h2."""
    peer = Peer(limits=limits)
    peer.transport.data.clear()
    if handlers is not None:
        peer.handlers = handlers
    return peer


def _frames_written(transport: FakeTransport) -> list[Frame]:
    data = bytes(transport.data)
    found = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        found.append(frame)
        data = data[9 + length :]
    return found


def _goaway(transport: FakeTransport) -> GoAwayFrame:
    (goaway,) = [frame for frame in _frames_written(transport) if isinstance(frame, GoAwayFrame)]
    return goaway


def test_the_limits_are_advertised_in_settings():
    peer = Peer(limits=Http2Limits(max_concurrent_streams=7, max_header_list_size=5000))
    settings = peer.client.remote_settings
    assert settings.max_concurrent_streams == 7
    assert settings.max_header_list_size == 5000


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_concurrent_streams"):
        Http2Limits(max_concurrent_streams=0)


def test_streams_past_the_concurrency_limit_are_refused_and_the_others_go_on():
    peer = Peer(limits=Http2Limits(max_concurrent_streams=2))
    encoder = hpack.Encoder()
    wire = b""
    for stream_id in (1, 3, 5):
        wire += HeadersFrame(
            stream_id, encoder.encode(REQUEST_HEADERS), flags=["END_HEADERS"]
        ).serialize()
    peer.transport.data.clear()
    peer.server.data_received(wire)
    (refused,) = [f for f in _frames_written(peer.transport) if isinstance(f, RstStreamFrame)]
    assert (refused.stream_id, refused.error_code) == (5, frames.REFUSED_STREAM)
    assert [handler.stream.stream_id for handler in peer.handlers] == [1, 3]
    assert not peer.transport.closed


def test_an_endless_continuation_sequence_is_cut_off_at_the_header_limit():
    peer = _raw_server(Http2Limits(max_header_list_size=4096))
    block = hpack.Encoder().encode(REQUEST_HEADERS)
    peer.server.data_received(HeadersFrame(1, block).serialize())
    for _ in range(10):
        if peer.transport.closed:
            break
        peer.server.data_received(ContinuationFrame(1, b"\x00" * 1000).serialize())
    assert peer.transport.closed
    assert _goaway(peer.transport).error_code == frames.ENHANCE_YOUR_CALM
    assert peer.server._partial_headers is None  # nothing kept
    peer.server.data_received(ContinuationFrame(1, b"\x00" * 1000).serialize())  # ignored


def test_a_header_list_that_expands_past_the_limit_ends_the_connection():
    peer = _raw_server(Http2Limits(max_header_list_size=1024))
    block = hpack.Encoder().encode([*REQUEST_HEADERS, ("x-big", "v" * 2000)])
    assert len(block) > 1024
    peer.server.data_received(HeadersFrame(1, block, flags=["END_HEADERS"]).serialize())
    assert _goaway(peer.transport).error_code == frames.ENHANCE_YOUR_CALM
    assert not peer.handlers


def test_header_values_that_are_not_utf8_are_read_as_latin1():
    encoder = hpack.Encoder()
    block = encoder.encode([(b":path", b"/p/M"), (b"x-meta", b"caf\xe9\xff")])
    assert HeaderDecoder(4096).decode(block) == [(":path", "/p/M"), ("x-meta", "caf\xe9\xff")]


def test_rapid_resets_past_the_budget_end_the_connection_with_enhance_your_calm():
    peer = _raw_server(Http2Limits(max_resets_per_second=10, reset_burst_seconds=1.0))
    encoder = hpack.Encoder()
    for index in range(30):
        if peer.transport.closed:
            break
        stream_id = 1 + 2 * index
        peer.server.data_received(
            HeadersFrame(
                stream_id, encoder.encode(REQUEST_HEADERS), flags=["END_HEADERS"]
            ).serialize()
            + RstStreamFrame(stream_id, error_code=frames.CANCEL).serialize()
        )
    assert peer.transport.closed
    assert _goaway(peer.transport).error_code == frames.ENHANCE_YOUR_CALM
    assert len(peer.handlers) == 11  # the eleventh reset was one too many
    assert all(handler.reset for handler in peer.handlers[:10])
    assert list(peer.server.streams) == [21]  # until the transport reports the close:
    peer.server.connection_lost(None)
    assert not peer.server.streams and peer.handlers[10].reset


def test_the_reset_budget_refills_with_time():
    budget = ResetBudget(rate=2, burst_seconds=1, now=0.0)
    assert budget.take(0.0) and budget.take(0.0) and not budget.take(0.0)
    assert budget.take(0.5) and not budget.take(0.5)


def test_control_replies_owed_to_a_client_that_does_not_read_end_the_connection():
    peer = _raw_server(Http2Limits(max_pending_control_frames=50))
    peer.transport.unsent = 1  # nothing written is taken
    pings = b"".join(PingFrame(0, opaque_data=b"%08d" % n).serialize() for n in range(49))
    peer.server.data_received(pings)
    assert not peer.transport.closed
    peer.server.data_received(PingFrame(0, opaque_data=b"12345678").serialize())
    assert peer.transport.aborted  # closed without waiting on a client that does not read
    assert _goaway(peer.transport).error_code == frames.ENHANCE_YOUR_CALM


def test_a_client_that_reads_may_ping_as_often_as_it_likes():
    peer = _raw_server(Http2Limits(max_pending_control_frames=50))
    pings = b"".join(PingFrame(0, opaque_data=b"%08d" % n).serialize() for n in range(500))
    peer.server.data_received(pings)
    acks = [f for f in _frames_written(peer.transport) if isinstance(f, PingFrame)]
    assert len(acks) == 500 and not peer.transport.closed


def test_settings_frames_do_not_walk_the_streams_and_windows_settle_when_used():
    peer = Peer(initial_window=100)
    stream_ids = [peer.request(b"x", end=False) for _ in range(20)]
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 50})
    peer.pump()
    server = peer.server
    assert all(handler.stream.initial_window == 100 for handler in peer.handlers)  # untouched
    handler = peer.handlers[0]
    peer.respond(handler, b"r" * 80)
    assert peer.received_body(stream_ids[0]) == b"r" * 50  # the new window, settled on use
    assert handler.stream.initial_window == 50
    # A larger window lets the waiting data go, without a WINDOW_UPDATE.
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    peer.pump()
    assert peer.received_body(stream_ids[0]) == b"r" * 80
    assert server.pending_bytes == 0


def test_while_the_transport_is_paused_no_frames_are_read_and_they_are_read_after():
    peer = Peer()
    peer.server.pause_writing()
    assert not peer.transport.reading
    stream_id = peer.client.get_next_available_stream_id()
    peer.client.send_headers(stream_id, REQUEST_HEADERS, end_stream=True)
    peer.server.data_received(peer.client.data_to_send())  # delivered before the pause took
    assert not peer.handlers  # held

    async def resume() -> None:
        peer.server.resume_writing()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(resume())
    assert peer.handlers and peer.handlers[0].ended
    assert peer.transport.reading


def test_answers_past_the_write_buffer_limit_stop_the_reading_of_more_requests():
    answered: list[Recorder] = []
    limits = Http2Limits(max_write_buffer_size=1000)

    def answer(connection: Http2Connection, stream: Stream, headers: Any) -> Recorder:
        handler = Recorder(stream, headers)
        answered.append(handler)
        connection.send_headers(stream, RESPONSE_HEADERS)
        connection.send_data(stream, b"r" * 600)
        connection.send_trailers(stream, TRAILERS)
        return handler

    async def run() -> None:
        transport = FakeTransport()
        server = Http2Connection(answer, lambda connection: None, limits)
        server.connection_made(transport)  # type: ignore[arg-type]
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        client.initiate_connection()
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        client.increment_flow_control_window(1 << 24)
        for _ in range(10):
            client.send_headers(client.get_next_available_stream_id(), REQUEST_HEADERS, True)
        transport.unsent = 10_000  # the client reads nothing ...
        server.data_received(client.data_to_send())
        assert len(answered) == 2  # 1,200 bytes queued: the rest waits
        assert not transport.reading
        server.pause_writing()  # as the transport would with that much unsent
        await asyncio.sleep(0)
        assert len(answered) == 2
        transport.unsent = 0  # ... then catches up
        server.resume_writing()
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(answered) == 10
        assert transport.reading

    asyncio.run(run())


def test_an_unexpected_error_while_reading_ends_the_connection_once_with_internal_error(caplog):
    class Broken(Recorder):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("a bug")

    def open_stream(connection: Http2Connection, stream: Stream, headers: Any) -> Recorder:
        return Broken(stream, headers)

    transport = FakeTransport()
    server = Http2Connection(open_stream, lambda connection: None)
    server.connection_made(transport)  # type: ignore[arg-type]
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    client.initiate_connection()
    client.send_headers(1, REQUEST_HEADERS)
    client.send_data(1, b"boom")
    server.data_received(client.data_to_send())
    assert transport.closed
    assert _goaway(transport).error_code == frames.INTERNAL_ERROR
    server.data_received(b"\x00" * 100)  # ignored: no second error, no traceback loop
    assert sum("unexpected error" in r.getMessage() for r in caplog.records) == 1


def test_the_limits_come_from_the_settings():
    from trident.runtime.settings import ServerSettings

    settings = ServerSettings(
        grpc_max_receive_message_size=512 << 20,
        grpc_max_concurrent_streams=9,
        grpc_max_header_list_size=3000,
        grpc_max_resets_per_second=7,
        grpc_max_pending_control_frames=11,
        grpc_max_write_buffer_size=12345,
    )
    limits = Http2Limits.from_settings(settings)
    assert limits.max_receive_message_size == 512 << 20
    assert limits.max_concurrent_streams == 9
    assert limits.max_header_list_size == 3000
    assert limits.max_resets_per_second == 7
    assert limits.max_pending_control_frames == 11
    assert limits.max_write_buffer_size == 12345
    assert limits.max_held_request_bytes == 1024 << 20  # twice the message limit
    assert Http2Limits.from_settings(ServerSettings()) == Http2Limits()


def test_while_answers_wait_on_closed_windows_past_the_limit_new_streams_are_refused():
    peer = Peer(initial_window=0, limits=Http2Limits(max_write_buffer_size=1000))
    stream_id = peer.request(b"x")
    peer.respond(peer.handlers[0], b"r" * 1500)  # waits: the client opened no window
    assert peer.server.pending_bytes == 1500
    refused = peer.request(b"y")
    (reset,) = peer.take(h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (refused, frames.REFUSED_STREAM)
    assert len(peer.handlers) == 1
    # WINDOW_UPDATEs are still read: the answer leaves, and new streams are served again.
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    peer.pump()
    assert peer.received_body(stream_id) == b"r" * 1500
    assert peer.server.pending_bytes == 0
    peer.request(b"z")
    assert len(peer.handlers) == 2
