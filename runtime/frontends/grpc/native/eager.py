"""Start a coroutine at once, in the caller, and make a task of it only if it has to wait.

Most unary calls never wait: the data plane runs a short model inline and the response is ready
when `infer` returns. Started eagerly inside `data_received`, such a call costs no task and no
loop turn, and its response leaves with the same write as the frames that read it. (Python 3.12
has eager tasks for this; Trident runs on 3.10 and 3.11 too.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start_eagerly(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run `coroutine` until it first waits. None when it finished; else the task that runs
    the rest of it (cancelling the task cancels the coroutine, as for any task)."""
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coroutine, awaited))


async def _resume(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive `coroutine` the way asyncio.Task does: wait for what it waits on, then send None
    into it (its own await then reads the result), or throw in what the wait raised."""
    while True:
        error: BaseException | None = None
        try:
            if awaited is None:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                await awaited
        except BaseException as exc:  # handed to the coroutine, as a task would
            error = exc
        try:
            awaited = coroutine.send(None) if error is None else coroutine.throw(error)
        except StopIteration:
            return
