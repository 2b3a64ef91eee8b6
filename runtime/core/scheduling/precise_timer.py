"""Timers that wake the event loop at a deadline, for the dynamic batcher's queue delay.

`max_queue_delay_microseconds` is typically a few hundred microseconds. The event loops' own
timers are too coarse for that: asyncio rounds a selector wait up to whole milliseconds, and
uvloop rounds sub-millisecond delays down to zero (the batcher would spin). On Linux a timerfd
(the kernel's high-resolution timer, no slack) is registered with the loop like a socket: no
thread, no GIL hand-off, and the loop wakes within microseconds of the deadline. Elsewhere the
loop's own timer is used, rounded up to whole milliseconds.

Deadlines are `time.monotonic_ns()` values (CLOCK_MONOTONIC, as timerfd's clock).
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Protocol


class WakeupTimer(Protocol):
    """What the dynamic batcher's driver needs of a timer (tests pass a fake one)."""

    @property
    def deadline_ns(self) -> int: ...

    def set(self, deadline_ns: int) -> None: ...

    def close(self) -> None: ...


#: Builds a timer: (loop, callback) -> WakeupTimer.
TimerFactory = Callable[[asyncio.AbstractEventLoop, Callable[[], None]], WakeupTimer]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1


def _load_timerfd() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_ITimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_timerfd()


class TimerFdTimer:
    """Linux: a timerfd the event loop watches. `set` only makes a system call when the deadline
    moves earlier; a later or cleared deadline is handled when the armed one expires."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        if _LIBC is None:
            raise OSError("timerfd is not available on this platform")
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._loop = loop
        self._callback = callback
        self._spec = _ITimerspec()
        #: The deadline asked for (0: none), and the one the kernel timer is set to.
        self._wanted_ns = 0
        self._armed_ns = 0
        loop.add_reader(fd, self._expired)

    @property
    def deadline_ns(self) -> int:
        return self._wanted_ns

    def set(self, deadline_ns: int) -> None:
        """Fire at `deadline_ns`, replacing any earlier setting; 0 clears it."""
        self._wanted_ns = deadline_ns
        if deadline_ns and (not self._armed_ns or deadline_ns < self._armed_ns):
            self._arm(deadline_ns)

    def _arm(self, deadline_ns: int) -> None:
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        assert _LIBC is not None  # a timer exists only where timerfd was found
        if _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._armed_ns = deadline_ns

    def _expired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        self._armed_ns = 0
        wanted = self._wanted_ns
        if not wanted:
            return
        if wanted > time.monotonic_ns():  # moved later since it was armed
            self._arm(wanted)
            return
        self._wanted_ns = 0
        self._callback()

    def close(self) -> None:
        if self._fd < 0:
            return
        self._wanted_ns = 0
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1


class LoopTimer:
    """Elsewhere: the event loop's own timer, with the wait rounded up to whole milliseconds
    (waiting a little longer, never spinning)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._wanted_ns = 0
        self._handle: asyncio.TimerHandle | None = None

    @property
    def deadline_ns(self) -> int:
        return self._wanted_ns

    def set(self, deadline_ns: int) -> None:
        if deadline_ns == self._wanted_ns:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._wanted_ns = deadline_ns
        if deadline_ns:
            wait_ms = math.ceil(max(0, deadline_ns - time.monotonic_ns()) / 1_000_000)
            self._handle = self._loop.call_later(wait_ms / 1000, self._expired)

    def _expired(self) -> None:
        self._handle = None
        self._wanted_ns = 0
        self._callback()

    def close(self) -> None:
        self.set(0)


def create_timer(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> WakeupTimer:
    """The most precise timer this platform offers."""
    if _LIBC is not None:
        try:
            return TimerFdTimer(loop, callback)
        except OSError:
            pass
    return LoopTimer(loop, callback)
