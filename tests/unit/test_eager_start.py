"""start_eagerly: a coroutine runs in the caller until it first waits, then as a task."""

from __future__ import annotations

import asyncio

import pytest

from trident.runtime.frontends.grpc.native.eager import start_eagerly


def test_a_coroutine_that_never_waits_finishes_in_the_caller():
    events: list[str] = []

    async def quick() -> None:
        done = asyncio.get_running_loop().create_future()
        done.set_result("ready")
        events.append(await done)  # a done future: no wait

    async def scenario() -> None:
        assert start_eagerly(quick()) is None
        assert events == ["ready"]

    asyncio.run(scenario())


def test_a_coroutine_that_waits_goes_on_as_a_task():
    events: list[object] = []

    async def waits(future: asyncio.Future[int]) -> None:
        events.append("started")
        events.append(await future)
        await asyncio.sleep(0)  # a bare yield too
        try:
            await asyncio.get_running_loop().create_future()  # never set: cancelled below
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def scenario() -> None:
        future = asyncio.get_running_loop().create_future()
        task = start_eagerly(waits(future))
        assert task is not None
        assert events == ["started"]  # ran up to its first wait in the caller
        future.set_result(7)
        for _ in range(5):
            await asyncio.sleep(0)
        assert events == ["started", 7]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert events == ["started", 7, "cancelled"]

    asyncio.run(scenario())


def test_an_exception_from_what_it_waits_on_reaches_the_coroutine():
    caught: list[BaseException] = []

    async def waits(future: asyncio.Future[int]) -> None:
        try:
            await future
        except ValueError as exc:
            caught.append(exc)

    async def scenario() -> None:
        future = asyncio.get_running_loop().create_future()
        task = start_eagerly(waits(future))
        assert task is not None
        future.set_exception(ValueError("bad"))
        await task
        assert [str(exc) for exc in caught] == ["bad"]

    asyncio.run(scenario())
