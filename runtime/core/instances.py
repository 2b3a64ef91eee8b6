"""Instance-group members and the worker each one runs on.

A synchronous instance (ONNX Runtime, torch, a sync Python `execute`) gets one dedicated thread,
so N instances give N concurrent executions while the event loop keeps serving. An instance whose
`execute` is a coroutine runs on the event loop itself.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from trident.backends.base import ComputeTiming, ModelInstance
from trident.runtime.errors import ModelExecutionError, TridentError
from trident.runtime.types import InferenceRequest, InferenceResponse


class InstanceWorker:
    """Runs batches on one model instance, one at a time."""

    __slots__ = ("_executor", "_loop", "instance", "name")

    def __init__(self, name: str, instance: ModelInstance, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.instance = instance
        self._loop = loop
        self._executor = (
            None
            if instance.is_async
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"trident-{name}")
        )

    async def execute(
        self, requests: list[InferenceRequest]
    ) -> tuple[list[InferenceResponse] | None, int, int, int, int]:
        """Run one batch. Returns (responses, start, input_end, output_start, end) in monotonic
        ns; raises TridentError when the whole batch failed."""
        timing = ComputeTiming()
        start = time.monotonic_ns()
        try:
            if self._executor is None:
                responses = await self.instance.execute(requests, timing)  # type: ignore[misc]
            else:
                responses = await self._loop.run_in_executor(
                    self._executor, self.instance.execute, requests, timing
                )
        except TridentError:
            raise
        except Exception as exc:  # a model's own failure: report it, keep serving
            raise ModelExecutionError(f"{type(exc).__name__}: {exc}") from exc
        end = time.monotonic_ns()
        input_end = timing.input_end_ns or start
        output_start = timing.output_start_ns or end
        if responses is not None and len(responses) != len(requests):
            raise ModelExecutionError(
                f"instance '{self.name}' returned {len(responses)} responses for "
                f"{len(requests)} requests"
            )
        return responses, start, input_end, output_start, end  # type: ignore[return-value]

    def close(self) -> None:
        """Finalize the instance on its own thread (models expect that), then stop the thread."""
        if self._executor is not None:
            self._executor.submit(self.instance.close).result()
            self._executor.shutdown(wait=True)
        else:
            self.instance.close()
