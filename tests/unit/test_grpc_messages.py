"""The native gRPC server's message framing, timeouts and status trailers."""

from __future__ import annotations

import gzip
import zlib

import grpc
import hpack
import pytest

from trident.runtime.frontends.grpc.native.messages import (
    MessageError,
    MessageReader,
    frame_message,
    metadata_value,
    parse_timeout,
    status_headers,
)


def _framed(message: bytes, compressed: int = 0) -> bytes:
    return bytes([compressed]) + len(message).to_bytes(4, "big") + message


def test_messages_are_cut_out_however_the_data_is_split():
    wire = _framed(b"first") + _framed(b"") + _framed(b"third" * 100)
    reader = MessageReader("identity")
    messages = []
    for start in range(0, len(wire), 3):
        messages += [bytes(m) for m in reader.feed(wire[start : start + 3])]
    assert messages == [b"first", b"", b"third" * 100]
    assert not reader.incomplete


def test_a_message_cut_short_is_incomplete():
    reader = MessageReader("identity")
    assert reader.feed(_framed(b"abcdef")[:-2]) == []
    assert reader.incomplete


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
def test_compressed_messages_are_decompressed(encoding, compress):
    reader = MessageReader(encoding)
    (message,) = reader.feed(_framed(compress(b"payload" * 50), compressed=1))
    assert bytes(message) == b"payload" * 50


def test_a_compressed_message_without_an_encoding_is_refused():
    with pytest.raises(MessageError):
        MessageReader("identity").feed(_framed(b"x", compressed=1))


def test_frame_message_round_trips():
    prefix, body = frame_message(b"hello")
    (message,) = MessageReader("identity").feed(prefix + body)
    assert bytes(message) == b"hello"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("100m", 0.1), ("5S", 5.0), ("2M", 120.0), ("1H", 3600.0), ("250u", 250e-6), ("7n", 7e-9)],
)
def test_timeouts_parse(value, seconds):
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "m", "10", "10x", "-5S", "1.5S", "٣S", "1" * 21 + "S"])
def test_malformed_timeouts_are_rejected(value):
    with pytest.raises(ValueError, match="invalid grpc-timeout"):
        parse_timeout(value)


def test_timeouts_longer_than_the_spec_allows_are_read_as_grpc_core_reads_them():
    assert parse_timeout("123456789S") is None  # years away: no deadline
    assert parse_timeout("123456789m") == pytest.approx(123456.789)


def test_status_trailers_percent_encode_the_message():
    block = status_headers(grpc.StatusCode.NOT_FOUND, "model 'ü' 100% gone\n", False)
    headers = dict(hpack.Decoder().decode(block))
    assert headers == {"grpc-status": "5", "grpc-message": "model '%C3%BC' 100%25 gone%0A"}


def test_trailers_only_carry_the_response_headers():
    block = status_headers(grpc.StatusCode.UNIMPLEMENTED, "", True)
    assert hpack.Decoder().decode(block) == [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "12"),
    ]


def test_binary_metadata_is_base64_decoded():
    assert metadata_value("trace-bin", "AAEC") == b"\x00\x01\x02"
    assert metadata_value("trace-bin", "AAE") == b"\x00\x01"  # unpadded, as grpc sends it
    assert metadata_value("plain", "AAEC") == "AAEC"
