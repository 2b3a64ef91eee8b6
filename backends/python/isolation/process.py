"""The server's handle on one model process: start it, talk to it, see it die, clean up.

Starting blocks (a new interpreter imports the model: call it off the event loop). Once
attached, the process's frames are read by the event loop itself (`add_reader`): no thread per
process and no thread hand-off per request.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from trident.runtime.errors import ModelLoadError

from . import shm, wire
from .stub import read_frame
from .wire import Kind

logger = logging.getLogger("trident.backends.python")

#: How long a new model process may take to import and initialize its model.
START_TIMEOUT_S = 300.0
_STUB_MODULE = "trident.backends.python.isolation.stub"

_live: weakref.WeakSet[ModelProcess] = weakref.WeakSet()
_live_lock = threading.Lock()
_stale_files_removed = False


def describe_exit(returncode: int | None) -> str:
    """How a process ended, as a message says it: 'exited with status 3', 'was killed by signal
    9 (SIGKILL)'."""
    if returncode is None:
        return "closed its channel but did not exit (killed)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


#: Bytes asked of one socket read. Frames carry metadata only (tensors travel through shared
#: memory), and `recv(n)` allocates n bytes first: a megabyte per read costs more than the read.
_READ_SIZE = 64 * 1024


class ModelProcess:
    """One child process and the shared memory the server made for it."""

    def __init__(self, ring_bytes: int) -> None:
        global _stale_files_removed
        if not _stale_files_removed:
            _stale_files_removed = True
            shm.remove_stale_files()
        self.prefix = shm.new_instance_prefix()
        self._ring_bytes = ring_bytes
        self._to_child_memory: mmap.mmap | None = None
        self._from_child_memory: mmap.mmap | None = None
        self.to_child: shm.RingWriter | None = None
        self.from_child: shm.RingReader | None = None
        self.sock: socket.socket | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frames: wire.FrameBuffer | None = None
        self._on_eof: Callable[[], None] | None = None
        self._outgoing = bytearray()
        self.closed = False

    # ----------------------------------------------------------------------------- starting

    def start(self, init: dict[str, Any], timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Start the process and wait until it loaded the model; returns its READY facts.
        Raises ModelLoadError (and leaves nothing behind) when it cannot."""
        try:
            return self._start(init, timeout_s)
        except BaseException:
            self.stop(kill=True)
            raise

    def _start(self, init: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = ours
        if init.get("mode") != "auto_complete":
            size = self._ring_bytes + shm.HEADER_BYTES
            self._to_child_memory = shm.create_segment(self.prefix + "-p2c", size)
            self._from_child_memory = shm.create_segment(self.prefix + "-c2p", size)
            self.to_child = shm.RingWriter(self._to_child_memory, self.prefix + "-p")
            self.from_child = shm.RingReader(self._from_child_memory, self.prefix + "-c")
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", _STUB_MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=_child_environment(),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.pid = self.popen.pid
        with _live_lock:
            _live.add(self)
        init = {**init, "prefix": self.prefix}
        ours.sendall(wire.frame(Kind.INIT, 0, json.dumps(init).encode()))
        ours.settimeout(timeout_s)
        try:
            while True:
                frame = read_frame(ours)
                if frame is None:
                    status = describe_exit(self._wait(5.0))
                    raise ModelLoadError(f"the model process {status} while loading the model")
                kind, flags, _, payload = frame
                if kind == Kind.READY:
                    facts: dict[str, Any] = json.loads(payload)
                    return facts
                if kind == Kind.LOAD_FAILED:
                    raise ModelLoadError(payload.decode(errors="replace"))
                if kind == Kind.LOG:
                    emit_log(flags, payload)
        except TimeoutError:
            raise ModelLoadError(
                f"the model process did not finish loading the model within {timeout_s:.0f} s"
            ) from None

    def _wait(self, timeout_s: float) -> int | None:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    # ----------------------------------------------------------------------------- serving

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        on_frame: Callable[[int, int, int, memoryview], None],
        on_eof: Callable[[], None],
    ) -> None:
        """Read this process's frames on `loop` (call on the loop's thread)."""
        assert self.sock is not None
        self.sock.settimeout(None)
        self.sock.setblocking(False)
        self._loop = loop
        self._frames = wire.FrameBuffer(on_frame)
        self._on_eof = on_eof
        loop.add_reader(self.sock.fileno(), self.read_available)

    def read_available(self) -> None:
        """Read and handle what the process sent (the loop calls it when the socket is
        readable; an inline execute calls it itself, on the loop's thread)."""
        assert self.sock is not None and self._frames is not None
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            try:
                self._frames.feed(data)
                return
            except Exception:  # a broken frame: treat the process as gone
                logger.exception("model process %d sent a broken frame; stopping it", self.pid)
                self.kill()
        self.detach()
        if self._on_eof is not None:
            self._on_eof()

    def send(self, data: bytes) -> bool:
        """Send a frame (on the loop's thread); what the socket cannot take now is queued.
        False when the process is gone (nothing of the frame reached it)."""
        sock = self.sock
        if sock is None or self.closed:
            return False
        if self._outgoing:
            self._outgoing += data
            return True
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return False  # the process is gone: the reader sees the end of the stream
        if sent < len(data):
            self._outgoing += data[sent:]
            assert self._loop is not None
            self._loop.add_writer(sock.fileno(), self._writable)
        return True

    def _writable(self) -> None:
        sock = self.sock
        assert sock is not None and self._loop is not None
        try:
            sent = sock.send(self._outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._outgoing.clear()
            sent = 0
        del self._outgoing[:sent]
        if not self._outgoing:
            self._loop.remove_writer(sock.fileno())

    def detach(self) -> None:
        """Stop reading and writing on the loop (call on the loop's thread)."""
        if self._loop is not None and self.sock is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_writer(self.sock.fileno())
        self._loop = None

    def kill(self) -> None:
        if self.popen is not None and self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()

    # ----------------------------------------------------------------------------- ending

    def stop(self, kill: bool = False, wait_s: float = 5.0) -> int | None:
        """End the process (at once with `kill`, else give it `wait_s` to exit on its own),
        reap it and remove its shared memory. Blocks: call off the event loop. Returns its
        exit code."""
        if self.closed:
            return self.popen.returncode if self.popen is not None else None
        self.closed = True
        returncode: int | None = None
        if self.popen is not None:
            if kill:
                self.kill()
            returncode = self._wait(wait_s)
            if returncode is None:
                self.kill()
                returncode = self._wait(10.0)
        if self.sock is not None:
            self.sock.close()
        for memory in (self._to_child_memory, self._from_child_memory):
            if memory is not None:
                with contextlib.suppress(BufferError):
                    memory.close()
        shm.remove_files(self.prefix)
        with _live_lock:
            _live.discard(self)
        return returncode


def emit_log(flags: int, payload: bytes | memoryview) -> None:
    """A model process's log record, logged here with its own file and line."""
    try:
        name, pathname, lineno, message = wire.decode_log(payload)
    except (ValueError, UnicodeDecodeError):
        return
    target = logging.getLogger(name or "trident.python_model")
    level = max(flags, 1) * 10
    if target.isEnabledFor(level):
        target.handle(target.makeRecord(target.name, level, pathname, lineno, message, (), None))


def _child_environment() -> dict[str, str]:
    """The server's environment, with its import path: the model process imports what the
    server can (the server's own modules, and anything a test or embedder added to sys.path)."""
    environment = dict(os.environ)
    paths = [path for path in sys.path if path and os.path.isdir(path)]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environment


@atexit.register
def _stop_all() -> None:
    """A server that exits without unloading its models still leaves no process or file."""
    with _live_lock:
        processes = list(_live)
    for process in processes:
        process.stop(kill=True, wait_s=1.0)
