"""Process isolation for Python models (Triton's stub design).

An isolated instance runs its model in a child process (stub.py) that the server starts, feeds
through shared memory (shm.py) and a small binary control channel (wire.py), watches, and
restarts when it dies (instance.py, process.py). A model opts in with
`parameters { key: "isolation" value: { string_value: "process" } }`, or every Python model does
with `--python-isolation process` (settings.py).
"""

from .settings import (
    IsolationSettings,
    default_isolation,
    set_default_busy_poll_us,
    set_default_isolation,
)

__all__ = [
    "IsolationSettings",
    "default_isolation",
    "set_default_busy_poll_us",
    "set_default_isolation",
]
