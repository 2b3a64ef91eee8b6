"""The fast path's framing (runtime/frontends/http/fast_infer.py) without sockets: however a byte
stream of requests is cut into reads, infer requests are answered in order and the bytes from the
first other request on are handed to the fallback protocol intact."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from trident.runtime.errors import InvalidArgumentError, TridentError
from trident.runtime.frontends.http.fast_infer import (
    MAX_PIPELINED,
    FastInferProtocol,
    FastInferReply,
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.protocol: asyncio.BaseProtocol | None = None
        self.closed = False
        self.paused = False

    def write(self, data) -> None:
        self.written += data

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class FallbackProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


def _post(body: bytes, path: bytes = b"/v2/models/m/infer") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        path,
        len(body),
        body,
    )


HEALTH = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"


def _run(stream: bytes, cuts: list[int], *, slow: bool) -> tuple[bytes, FallbackProtocol]:
    loop = asyncio.new_event_loop()
    fallbacks: list[FallbackProtocol] = []

    def fallback() -> FallbackProtocol:
        fallbacks.append(FallbackProtocol())
        return fallbacks[-1]

    async def infer(model, version, body, header_length, accept_encoding) -> FastInferReply:
        if slow:
            await asyncio.sleep(0)
        if body == b"bad":
            raise InvalidArgumentError("bad body")
        return FastInferReply(200, b"application/json", b"echo:" + body)

    def error_reply(error: TridentError) -> FastInferReply:
        return FastInferReply(error.http_status, b"application/json", error.message.encode())

    async def main() -> None:
        transport = FakeTransport()
        protocol = FastInferProtocol(fallback, infer, error_reply, 1 << 20, set())
        protocol.connection_made(transport)
        previous = 0
        for cut in [*sorted(set(cuts)), len(stream)]:
            if cut > previous:
                protocol.data_received(stream[previous:cut])
                previous = cut
            for _ in range(3):
                await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        main.transport = transport  # type: ignore[attr-defined]

    loop.run_until_complete(main())
    loop.close()
    transport = main.transport  # type: ignore[attr-defined]
    return bytes(transport.written), (fallbacks[0] if fallbacks else FallbackProtocol())


def _bodies(written: bytes) -> list[bytes]:
    bodies = []
    while written:
        head, _, rest = written.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        bodies.append(rest[:length])
        written = rest[length:]
    return bodies


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(min_size=0, max_size=40).filter(lambda b: b != b"bad"), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    slow=st.booleans(),
)
def test_any_cut_answers_infers_in_order_then_hands_over_the_rest(bodies, cuts, slow):
    tail = HEALTH + _post(b"after")
    stream = b"".join(_post(body) for body in bodies) + tail
    written, fallback = _run(stream, cuts, slow=slow)
    assert _bodies(written) == [b"echo:" + body for body in bodies]
    assert bytes(fallback.received) == tail


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6), slow=st.booleans())
def test_errors_answer_in_place(cuts, slow):
    stream = _post(b"one") + _post(b"bad") + _post(b"two")
    written, fallback = _run(stream, cuts, slow=slow)
    assert _bodies(written) == [b"echo:one", b"bad body", b"echo:two"]
    assert b"400 Bad Request" in written
    assert fallback.received == b""


@settings(max_examples=30, deadline=None)
@given(junk=st.binary(min_size=1, max_size=200), cuts=st.lists(st.integers(0, 200), max_size=4))
def test_whatever_is_not_an_infer_reaches_the_fallback_whole(junk, cuts):
    stream = _post(b"x") + junk
    written, fallback = _run(stream, cuts, slow=False)
    # The first request is answered; what follows it is the fallback's to judge, byte for byte,
    # unless it happens to be (the start of) another well-formed infer request.
    assert _bodies(written)[:1] == [b"echo:x"]
    if fallback.received:
        assert stream.endswith(bytes(fallback.received))


def test_a_chunked_body_goes_to_the_fallback():
    stream = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    written, fallback = _run(stream, [10, 50], slow=False)
    assert written == b"" and bytes(fallback.received) == stream


def test_an_sse_request_goes_to_the_fallback():
    body = json.dumps({"inputs": []}).encode()
    stream = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    written, fallback = _run(stream, [], slow=False)
    assert written == b"" and bytes(fallback.received) == stream


def test_a_client_pipelining_past_the_bound_is_paused_then_resumed():
    loop = asyncio.new_event_loop()
    transport = FakeTransport()
    paused_seen: list[bool] = []

    async def infer(model, version, body, header_length, accept_encoding) -> FastInferReply:
        await asyncio.sleep(0)
        paused_seen.append(transport.paused)
        return FastInferReply(200, b"application/json", b"echo:" + body)

    async def main() -> None:
        protocol = FastInferProtocol(FallbackProtocol, infer, None, 1 << 20, set())  # type: ignore[arg-type]
        protocol.connection_made(transport)
        count = MAX_PIPELINED + 8
        protocol.data_received(b"".join(_post(b"%d" % i) for i in range(count)))
        for _ in range(count * 4):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    loop.close()
    count = MAX_PIPELINED + 8
    assert _bodies(bytes(transport.written)) == [b"echo:%d" % i for i in range(count)]
    assert any(paused_seen)  # reading stopped while more than the bound waited
    assert not transport.paused  # and resumed once they were answered
