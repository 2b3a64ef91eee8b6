"""The dynamic batcher's queue: priority levels, each with Triton's queue policy.

A `ModelQueuePolicy` (config.pbtxt `default_queue_policy` / `priority_queue_policy`) says how
many requests may wait at a level (`max_queue_size`, 0 = no limit), how long they may wait
(`default_timeout_microseconds`, 0 = forever; a request's own `timeout` parameter shortens it when
`allow_timeout_override` is set) and what happens when they waited too long: REJECT fails them,
DELAY moves them behind the level's other requests.

Level 1 is served first. Requests are batched in this order: level by level, and within a level
the requests still in time (arrival order) before the delayed ones (the order they expired in).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import ModelLoadError, UnavailableError
from trident.runtime.protocol import model_config_pb2 as mc


class TimeoutAction(StrEnum):
    """What happens to a request that waited its queue timeout out (`timeout_action`)."""

    #: Fail it (UNAVAILABLE).
    REJECT = "REJECT"
    #: Move it behind the level's other requests, where it waits for good.
    DELAY = "DELAY"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """One priority level's `ModelQueuePolicy`."""

    timeout_action: TimeoutAction = TimeoutAction.REJECT
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0

    @classmethod
    def from_proto(cls, policy: mc.ModelQueuePolicy) -> QueuePolicy:
        return cls(
            timeout_action=TimeoutAction(
                mc.ModelQueuePolicy.TimeoutAction.Name(policy.timeout_action)
            ),
            default_timeout_us=policy.default_timeout_microseconds,
            allow_timeout_override=policy.allow_timeout_override,
            max_queue_size=policy.max_queue_size,
        )

    @property
    def has_timeouts(self) -> bool:
        return bool(self.default_timeout_us or self.allow_timeout_override)

    def timeout_us(self, requested_us: int) -> int:
        """How long a request may wait in the queue (0 = forever). A request may shorten the
        default, never lengthen it; with no default (0) its own timeout applies as it is."""
        timeout = self.default_timeout_us
        if self.allow_timeout_override and requested_us:
            timeout = min(timeout, requested_us) if timeout else requested_us
        return timeout


class QueuedRequest:
    """A request waiting in the queue, with what the batcher needs to know about it."""

    __slots__ = ("enqueued_ns", "expires_ns", "level", "queued", "request", "size", "timeout_us")

    def __init__(
        self,
        request: InFlightRequest,
        size: int,
        level: int,
        enqueued_ns: int,
        timeout_us: int,
    ) -> None:
        self.request = request
        #: Inferences it adds to a batch (its batch dimension).
        self.size = size
        self.level = level
        self.enqueued_ns = enqueued_ns
        self.timeout_us = timeout_us
        #: When it stops being in time (monotonic ns); 0 = never, or already delayed.
        self.expires_ns = enqueued_ns + timeout_us * 1000 if timeout_us else 0
        #: False once it left the queue (batched, rejected, cancelled).
        self.queued = True


class _Level:
    __slots__ = ("delayed", "policy", "ready")

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy = policy
        self.ready: deque[QueuedRequest] = deque()
        self.delayed: deque[QueuedRequest] = deque()

    def __len__(self) -> int:
        return len(self.ready) + len(self.delayed)


class PriorityQueue:
    """Queued requests by priority level. Not thread-safe: the batcher's loop owns it."""

    def __init__(
        self,
        model_name: str,
        priority_levels: int,
        default_priority_level: int,
        default_policy: QueuePolicy,
        level_policies: dict[int, QueuePolicy],
    ) -> None:
        self._model_name = model_name
        self._level_count = max(1, priority_levels)
        self._default_level = default_priority_level if priority_levels else 1
        self._levels = [
            _Level(level_policies.get(level, default_policy))
            for level in range(1, self._level_count + 1)
        ]
        self.has_timeouts = any(level.policy.has_timeouts for level in self._levels)
        self._count = 0
        #: Sum of the queued requests' sizes (inferences).
        self.queued_size = 0

    def __len__(self) -> int:
        return self._count

    def level_of(self, priority: int) -> int:
        """The level a request's `priority` maps to: 0, or a value above the configured levels,
        means the default level (Triton accepts such values silently and does the same)."""
        if priority == 0 or priority > self._level_count:
            return self._default_level
        return priority

    def push(self, request: InFlightRequest, size: int, since_ns: int) -> QueuedRequest:
        """Queue a request at the back of its level. UnavailableError when the level is full."""
        level_number = self.level_of(request.priority)
        level = self._levels[level_number - 1]
        policy = level.policy
        if policy.max_queue_size and len(level) >= policy.max_queue_size:
            where = f" at priority level {level_number}" if self._level_count > 1 else ""
            raise UnavailableError(
                f"model '{self._model_name}' has {len(level)} requests queued{where}, its "
                f"max_queue_size: request rejected, retry later (or raise "
                f"dynamic_batching max_queue_size)"
            )
        entry = QueuedRequest(
            request, size, level_number, since_ns, policy.timeout_us(request.timeout_us)
        )
        level.ready.append(entry)
        self._count += 1
        self.queued_size += size
        return entry

    def __iter__(self) -> Iterator[QueuedRequest]:
        """Requests in the order they would be batched."""
        for level in self._levels:
            yield from level.ready
            yield from level.delayed

    def pop(self, count: int) -> list[QueuedRequest]:
        """Take the first `count` requests in batching order."""
        taken: list[QueuedRequest] = []
        for level in self._levels:
            for queue in (level.ready, level.delayed):
                while queue and len(taken) < count:
                    entry = queue.popleft()
                    entry.queued = False
                    taken.append(entry)
                if len(taken) == count:
                    break
            if len(taken) == count:
                break
        self._count -= len(taken)
        self.queued_size -= sum(entry.size for entry in taken)
        return taken

    def remove(self, entry: QueuedRequest) -> bool:
        """Take one request out wherever it is (a cancelled one). False if it left already."""
        if not entry.queued:
            return False
        level = self._levels[entry.level - 1]
        try:
            level.ready.remove(entry)
        except ValueError:
            level.delayed.remove(entry)
        entry.queued = False
        self._count -= 1
        self.queued_size -= entry.size
        return True

    def drain(self) -> list[QueuedRequest]:
        return self.pop(self._count)

    def expire(self, now_ns: int) -> list[QueuedRequest]:
        """Apply each level's timeout action to the requests that waited too long: DELAY moves
        them behind the level's other requests, REJECT takes them out (returned, to be failed).
        """
        rejected: list[QueuedRequest] = []
        if not self.has_timeouts:
            return rejected
        for level in self._levels:
            if not level.ready:
                continue
            expired = [e for e in level.ready if e.expires_ns and e.expires_ns <= now_ns]
            if not expired:
                continue
            level.ready = deque(e for e in level.ready if not e.expires_ns or e.expires_ns > now_ns)
            if level.policy.timeout_action == TimeoutAction.DELAY:
                for entry in expired:
                    entry.expires_ns = 0  # delayed for good: it expires only once
                level.delayed.extend(expired)
                continue
            for entry in expired:
                entry.queued = False
            self._count -= len(expired)
            self.queued_size -= sum(entry.size for entry in expired)
            rejected.extend(expired)
        return rejected

    def next_expiry_ns(self) -> int:
        """The earliest time a queued request stops being in time; 0 if none will."""
        if not self.has_timeouts:
            return 0
        soonest = 0
        for level in self._levels:
            for entry in level.ready:
                if entry.expires_ns and (not soonest or entry.expires_ns < soonest):
                    soonest = entry.expires_ns
        return soonest


def level_policies(batching: mc.ModelDynamicBatching, model_name: str) -> dict[int, QueuePolicy]:
    """`priority_queue_policy` by level, checked against `priority_levels`."""
    policies = {}
    for level, policy in batching.priority_queue_policy.items():
        if not 1 <= level <= batching.priority_levels:
            raise ModelLoadError(
                f"model '{model_name}': priority_queue_policy has an entry for level {level}, "
                f"outside priority_levels 1..{batching.priority_levels}"
            )
        policies[level] = QueuePolicy.from_proto(policy)
    return policies
