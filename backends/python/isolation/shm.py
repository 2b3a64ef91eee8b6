"""Shared memory between the server and an isolated model's process.

Each isolated instance has two rings, one per direction, in files under /dev/shm that the server
creates (so the server can always remove them, also after the child died). Tensor bytes are
written into a ring block and only a compact descriptor (offset, size, dtype, shape) travels
over the control socket. A tensor block too large for the ring's free space goes into an
overflow segment of its own, made for that one message and removed once it was read.

Every file of an instance starts with the instance's prefix, `trident-py-<server pid>-<id>`:
removing an instance's files is removing that prefix's files, whatever the child left behind.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import mmap
import os
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

#: Files of isolated instances start with this, then the server's pid.
FILE_PREFIX = "trident-py-"
#: Ring blocks start at multiples of this (cache lines; numpy's widest alignment need).
ALIGNMENT = 64
#: The ring file starts with this header: the consumer's release mark (u64) at offset 0.
HEADER_BYTES = 64
_MARK = struct.Struct("<Q")

_instance_ids = itertools.count(1)


def shm_directory() -> Path:
    """/dev/shm where it exists (memory-backed on Linux), else the temporary folder."""
    directory = Path("/dev/shm")
    if directory.is_dir() and os.access(directory, os.W_OK):
        return directory
    return Path(tempfile.gettempdir())


def new_instance_prefix() -> str:
    """A file prefix unique to one isolated instance of this server process."""
    return f"{FILE_PREFIX}{os.getpid()}-{next(_instance_ids)}-{os.urandom(3).hex()}"


def align(size: int) -> int:
    return (size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def create_segment(name: str, size: int) -> mmap.mmap:
    """Create the file `name` of `size` bytes (never an existing one) and map it."""
    path = shm_directory() / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, max(size, 1))
        return mmap.mmap(fd, max(size, 1))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(fd)


def open_segment(name: str, size: int) -> mmap.mmap:
    """Map the existing file `name`, checking it holds at least `size` bytes."""
    if "/" in name or not name.startswith(FILE_PREFIX):
        raise ValueError(f"not a segment of an isolated model: {name!r}")
    fd = os.open(shm_directory() / name, os.O_RDWR)
    try:
        actual = os.fstat(fd).st_size
        if actual < size:
            raise ValueError(f"segment {name} holds {actual} bytes, {size} expected")
        return mmap.mmap(fd, actual)
    finally:
        os.close(fd)


def unlink_segment(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(shm_directory() / name)


def remove_files(prefix: str) -> int:
    """Remove every segment file whose name starts with `prefix`; returns how many."""
    removed = 0
    directory = shm_directory()
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix):
            with contextlib.suppress(OSError):
                os.unlink(directory / name)
                removed += 1
    return removed


def remove_stale_files() -> int:
    """Remove the segments of server processes that no longer run (a server killed by SIGKILL
    cannot clean up after itself; the next one does)."""
    removed = 0
    directory = shm_directory()
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(FILE_PREFIX):
            continue
        pid_text = name[len(FILE_PREFIX) :].partition("-")[0]
        if not pid_text.isdigit() or _process_exists(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(directory / name)
            removed += 1
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Block:
    """Where one message's tensor bytes were written: a ring block or an overflow segment."""

    #: 0: the ring; n > 0: overflow segment number n.
    segment: int
    offset: int
    size: int
    #: The ring's release mark once this block is read (0 for overflow segments).
    end: int


class RingWriter:
    """The producer side of a ring: reserves blocks, in order, in the space the reader freed.

    Not thread-safe: callers serialize reserve + write + send (so blocks reach the reader in the
    order they were reserved)."""

    def __init__(self, memory: mmap.mmap, overflow_prefix: str) -> None:
        self.memory = memory
        self.capacity = len(memory) - HEADER_BYTES
        self._head = 0
        self._overflow_prefix = overflow_prefix
        self._overflow_numbers = itertools.count(1)
        self.overflow_count = 0

    def reserve(self, size: int) -> tuple[Block, mmap.mmap]:
        """A block of `size` bytes and the memory it is in (the ring, or a new overflow
        segment the caller closes after writing)."""
        size = align(size)
        released = _MARK.unpack_from(self.memory, 0)[0]
        position = self._head % self.capacity
        skip = self.capacity - position if position + size > self.capacity else 0
        if size <= self.capacity and self._head + skip + size - released <= self.capacity:
            self._head += skip
            offset = HEADER_BYTES + self._head % self.capacity
            self._head += size
            return Block(0, offset, size, self._head), self.memory
        number = next(self._overflow_numbers)
        self.overflow_count += 1
        memory = create_segment(self.overflow_name(number), size)
        return Block(number, 0, size, 0), memory

    def overflow_name(self, number: int) -> str:
        return f"{self._overflow_prefix}{number}"

    def reset(self) -> None:
        """Start over at an empty ring (a new reader process)."""
        self._head = 0
        _MARK.pack_into(self.memory, 0, 0)


class RingReader:
    """The consumer side: maps blocks, and releases them (in any order) back to the writer."""

    def __init__(self, memory: mmap.mmap, overflow_prefix: str) -> None:
        self.memory = memory
        self._overflow_prefix = overflow_prefix
        self._outstanding: collections.deque[list[int]] = collections.deque()
        self._lock = threading.Lock()

    def open(self, block: Block) -> mmap.mmap:
        """The memory holding `block` (an overflow segment is unlinked at once: the mapping
        stays valid while used, and nothing is left behind if this process dies)."""
        if block.segment == 0:
            if block.offset < HEADER_BYTES or block.offset + block.size > len(self.memory):
                raise ValueError(f"ring block {block} lies outside the ring")
            with self._lock:
                self._outstanding.append([block.end, 0])
            return self.memory
        name = f"{self._overflow_prefix}{block.segment}"
        try:
            return open_segment(name, block.offset + block.size)
        except OSError as exc:  # named by a broken or hostile peer: a bad message, no more
            raise ValueError(f"overflow segment {block.segment} cannot be opened: {exc}") from None
        finally:
            unlink_segment(name)

    def release(self, block: Block) -> None:
        """The block's bytes are no longer needed: advance the writer's mark past every block
        released so far in ring order."""
        if block.segment != 0:
            return
        with self._lock:
            for entry in self._outstanding:
                if entry[0] == block.end and not entry[1]:
                    entry[1] = 1
                    break
            mark = -1
            while self._outstanding and self._outstanding[0][1]:
                mark = self._outstanding.popleft()[0]
            if mark >= 0:
                _MARK.pack_into(self.memory, 0, mark)

    def reset(self) -> None:
        with self._lock:
            self._outstanding.clear()
