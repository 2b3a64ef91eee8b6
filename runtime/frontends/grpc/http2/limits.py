"""What one client may cost the native gRPC server: the limits every HTTP/2 connection enforces.

One `Http2Limits` object is built from the server settings (`Http2Limits.from_settings`) and
handed to every connection. Each field says what happens past it; docs/grpc.md ("Limits") lists
them with their flags. The defaults are close to grpc-core's, so a client that works against
Triton works here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trident.runtime.settings import ServerSettings


#: The default of `Http2Limits.max_held_request_bytes`.
HELD_REQUEST_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """The limits of one HTTP/2 connection (and of the gRPC calls on it)."""

    #: Largest request message, in bytes, checked from its length prefix before it is buffered
    #: and again while it is decompressed. Past it the call ends with RESOURCE_EXHAUSTED.
    max_receive_message_size: int = 64 * 1024 * 1024
    #: Streams open at once on one connection (advertised in SETTINGS); more are refused with
    #: RST_STREAM(REFUSED_STREAM).
    max_concurrent_streams: int = 1024
    #: Largest header block (HEADERS plus its CONTINUATION frames, as received) and largest
    #: decoded header list (RFC 7541 sizes); past either the connection ends with GOAWAY.
    max_header_list_size: int = 16 * 1024
    #: RST_STREAM frames a client may send per second, on average; a burst of
    #: `reset_burst_seconds` times as many is allowed. Past it: GOAWAY(ENHANCE_YOUR_CALM).
    max_resets_per_second: int = 200
    reset_burst_seconds: float = 2.0
    #: Control replies (PING and SETTINGS acknowledgements, stream refusals) queued for a client
    #: that is not reading them. Past it: GOAWAY(ENHANCE_YOUR_CALM).
    max_pending_control_frames: int = 1000
    #: Unsent response bytes per connection (in the transport's buffer, or waiting for the
    #: client's flow-control window) above which the server stops reading from the connection
    #: (or refuses new streams, while the client's windows hold the data back).
    max_write_buffer_size: int = 4 * 1024 * 1024
    #: Request bytes one connection's calls may hold while their messages are incomplete (or
    #: complete but waiting for END_STREAM), all streams together. The call whose data passes
    #: it ends with RESOURCE_EXHAUSTED. At least twice the message limit.
    max_held_request_bytes: int = 256 * 1024 * 1024  # = HELD_REQUEST_BYTES

    def __post_init__(self) -> None:
        for name in (
            "max_receive_message_size",
            "max_concurrent_streams",
            "max_header_list_size",
            "max_resets_per_second",
            "max_pending_control_frames",
            "max_write_buffer_size",
            "max_held_request_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.reset_burst_seconds <= 0:
            raise ValueError("reset_burst_seconds must be positive")

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Http2Limits:
        """The limits the server's flags (--grpc-max-*) set."""
        return cls(
            max_receive_message_size=settings.grpc_max_receive_message_size,
            max_concurrent_streams=settings.grpc_max_concurrent_streams,
            max_header_list_size=settings.grpc_max_header_list_size,
            max_resets_per_second=settings.grpc_max_resets_per_second,
            max_pending_control_frames=settings.grpc_max_pending_control_frames,
            max_write_buffer_size=settings.grpc_max_write_buffer_size,
            max_held_request_bytes=max(
                HELD_REQUEST_BYTES, 2 * settings.grpc_max_receive_message_size
            ),
        )


class ResetBudget:
    """A token bucket for the client's RST_STREAM frames (rapid-reset protection, CVE-2023-44487):
    `rate` resets a second on average, `rate * burst_seconds` at once."""

    __slots__ = ("_capacity", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst_seconds: float, now: float) -> None:
        self._rate = rate
        self._capacity = rate * burst_seconds
        self._tokens = self._capacity
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one reset; False when the budget is exhausted."""
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
