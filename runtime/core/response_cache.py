"""The response cache: answers a request that was seen before without running the model.

Enabled server-wide with tritonserver's flag (`--cache-config local,size=BYTES`) and per model with
`response_cache { enable: true }`. One cache serves every model (Triton's `local` cache): entries
are least-recently-used first out, bounded by the total bytes of the cached outputs.

The key hashes the model name and version, every input's name, datatype, shape and bytes, the
names of the outputs the client asked for, and the request's custom parameters (Triton hashes only
names and bytes; we add the rest so two requests that differ only in shape or parameters never
share an answer). Only successful responses are stored, with their arrays copied (inputs may be
views of a client's shared memory that changes after the request).

Statistics follow Triton: a hit counts as a success (with its queue time, up to the lookup) and as
a cache hit, never in compute or inference counts; a miss counts its lookup plus insertion time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import (
    InferenceRequest,
    InferenceResponse,
    Tensor,
    serialize_bytes_tensor,
)

if TYPE_CHECKING:
    from .stats import ModelStats

logger = logging.getLogger("trident.cache")

#: Cache implementations `--cache-config` accepts (tritonserver also has "redis").
CACHE_KINDS = ("local",)
#: Bookkeeping bytes charged per entry on top of its tensors, so many tiny entries still fill it.
_ENTRY_OVERHEAD = 64


def parse_cache_config(items: list[str]) -> tuple[str, int] | None:
    """`--cache-config` values (`local,size=1048576`, repeatable) -> (kind, size in bytes), or
    None when no cache is configured. Raises InvalidArgumentError with what to change."""
    if not items:
        return None
    kind = ""
    settings: dict[str, str] = {}
    for item in items:
        name, _, rest = item.partition(",")
        name = name.strip()
        if not name or not rest:
            raise InvalidArgumentError(
                f"--cache-config '{item}': expected <cache>,<key>=<value>, e.g. "
                "--cache-config=local,size=1048576"
            )
        if kind and name != kind:
            raise InvalidArgumentError(
                f"--cache-config: multiple cache configurations ('{kind}' and '{name}'); "
                "configure one cache"
            )
        kind = name
        key, sep, value = rest.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(
                f"--cache-config '{item}': expected <key>=<value> after the cache name"
            )
        settings[key.strip()] = value.strip()
    if kind not in CACHE_KINDS:
        raise InvalidArgumentError(
            f"--cache-config: cache '{kind}' is not available in Trident (available: "
            f"{', '.join(CACHE_KINDS)})"
        )
    unknown = sorted(set(settings) - {"size"})
    if unknown:
        raise InvalidArgumentError(
            f"--cache-config: unknown setting(s) {unknown} for the local cache (it takes size)"
        )
    if "size" not in settings:
        raise InvalidArgumentError(
            "--cache-config: the local cache needs a size in bytes, e.g. local,size=1048576"
        )
    try:
        size = int(settings["size"])
    except ValueError:
        raise InvalidArgumentError(
            f"--cache-config: size must be a whole number of bytes, got '{settings['size']}'"
        ) from None
    if size <= 0:
        raise InvalidArgumentError("--cache-config: size must be more than 0 bytes")
    return kind, size


def create_response_cache(items: list[str]) -> ResponseCache | None:
    """The server's cache from its `--cache-config` values, or None when there is none."""
    parsed = parse_cache_config(items)
    return None if parsed is None else ResponseCache(parsed[1])


@dataclass(slots=True)
class _Entry:
    outputs: list[Tensor]
    parameters: dict[str, object]
    nbytes: int


class ResponseCache:
    """An LRU map from request keys to responses, bounded by the bytes it holds.

    Used from the event loop; a lock keeps it safe for callers on other threads anyway.
    """

    def __init__(self, size_bytes: int) -> None:
        self.size_bytes = size_bytes
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.lookup_ns = 0
        self.insertion_ns = 0

    @property
    def num_entries(self) -> int:
        return len(self._entries)

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def utilization(self) -> float:
        return self.used_bytes / self.size_bytes if self.size_bytes else 0.0

    def get(self, key: bytes) -> InferenceResponse | None:
        """The cached response for `key` (a fresh object sharing the cached arrays), or None."""
        start = time.monotonic_ns()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
            self.lookup_ns += time.monotonic_ns() - start
        if entry is None:
            return None
        return InferenceResponse(
            outputs=[
                Tensor(t.name, t.datatype, t.shape, t.data, parameters=dict(t.parameters))
                for t in entry.outputs
            ],
            parameters=dict(entry.parameters),
        )

    def put(self, key: bytes, response: InferenceResponse) -> bool:
        """Store a copy of `response`; False when it is larger than the whole cache."""
        start = time.monotonic_ns()
        outputs = [_copy_tensor(tensor) for tensor in response.outputs]
        nbytes = _ENTRY_OVERHEAD + len(key) + sum(_tensor_bytes(t) for t in outputs)
        stored = nbytes <= self.size_bytes
        with self._lock:
            if stored:
                previous = self._entries.pop(key, None)
                if previous is not None:
                    self.used_bytes -= previous.nbytes
                while self._entries and self.used_bytes + nbytes > self.size_bytes:
                    _, evicted = self._entries.popitem(last=False)
                    self.used_bytes -= evicted.nbytes
                    self.evictions += 1
                self._entries[key] = _Entry(outputs, dict(response.parameters), nbytes)
                self.used_bytes += nbytes
            self.insertion_ns += time.monotonic_ns() - start
        if not stored:
            logger.warning(
                "response of %d bytes is larger than the whole response cache (%d bytes); "
                "not cached (raise --cache-config local,size=...)",
                nbytes,
                self.size_bytes,
            )
        return stored

    def lookup(
        self, model_name: str, model_version: int, request: InferenceRequest, stats: ModelStats
    ) -> CacheLookup | None:
        """Look `request` up for a model whose config enables the cache. Returns None when the
        request cannot be cached (an input still in shared memory); otherwise a CacheLookup whose
        `response` is set on a hit (statistics already recorded) and whose `store` must be called
        with the model's response on a miss."""
        start = time.monotonic_ns()
        key = request_key(model_name, model_version, request)
        if key is None:
            return None
        response = self.get(key)
        end = time.monotonic_ns()
        if response is not None:
            stats.record_cache_hit(request.arrival_ns, start, end, end - start)
        return CacheLookup(self, key, stats, end - start, response)


class CacheLookup:
    """The outcome of one lookup: the cached response on a hit, or how to store the answer."""

    __slots__ = ("_cache", "_key", "_lookup_ns", "_stats", "response")

    def __init__(
        self,
        cache: ResponseCache,
        key: bytes,
        stats: ModelStats,
        lookup_ns: int,
        response: InferenceResponse | None,
    ) -> None:
        self._cache = cache
        self._key = key
        self._stats = stats
        self._lookup_ns = lookup_ns
        self.response = response

    def store(self, response: InferenceResponse) -> None:
        """Cache a successful response of the model (call before the outputs are finished for
        the client: classification and shared-memory placement are per request)."""
        if response.error is not None or not response.final:
            return
        start = time.monotonic_ns()
        self._cache.put(self._key, response)
        self._stats.record_cache_miss(self._lookup_ns + time.monotonic_ns() - start)


def request_key(model_name: str, model_version: int, request: InferenceRequest) -> bytes | None:
    """A 128-bit hash of everything that decides a response; None if an input has no bytes."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(f"{model_name}\0{model_version}\0".encode())
    for tensor in sorted(request.inputs, key=lambda t: t.name):
        data = tensor.data
        if data is None:
            return None
        hasher.update(f"{tensor.name}\0{tensor.datatype}\0{tensor.shape}\0".encode())
        if data.dtype == np.object_ or data.dtype.kind in ("S", "U"):
            hasher.update(serialize_bytes_tensor(data))
        else:
            hasher.update(np.ascontiguousarray(data).view(np.uint8).reshape(-1).data)
    if request.outputs:
        names = sorted(output.name for output in request.outputs)
        hasher.update(("\0outputs\0" + "\0".join(names)).encode())
    if request.parameters:
        hasher.update(("\0parameters\0" + repr(sorted(request.parameters.items()))).encode())
    return hasher.digest()


def _copy_tensor(tensor: Tensor) -> Tensor:
    data = tensor.data
    copied = None if data is None else np.array(data, copy=True)
    return Tensor(tensor.name, tensor.datatype, tensor.shape, copied, None, dict(tensor.parameters))


def _tensor_bytes(tensor: Tensor) -> int:
    data = tensor.data
    if data is None:
        return 0
    if data.dtype == np.object_:
        return sum(len(item) if isinstance(item, (bytes, str)) else 8 for item in data.flat)
    return int(data.nbytes)
