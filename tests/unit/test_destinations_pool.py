"""The bounded thread pool that runs hvac/boto3 calls off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from rotator.pool import BlockingPool

REQUEST = contextvars.ContextVar("REQUEST", default="none")


async def test_run_blocking_returns_the_result_from_another_thread() -> None:
    """A call runs on a worker thread, not the loop's, and its result is returned."""
    with BlockingPool(max_workers=2) as pool:
        name = await pool.run_blocking(lambda: threading.current_thread().name)
    assert name.startswith("rotator-io")
    assert name != threading.current_thread().name


async def test_run_blocking_raises_the_call_s_exception() -> None:
    """An exception raised by the call is raised by the await."""

    def fail(message: str) -> None:
        raise KeyError(message)

    with BlockingPool(max_workers=1) as pool, pytest.raises(KeyError, match="boom"):
        await pool.run_blocking(fail, "boom")


async def test_context_variables_travel_into_the_worker() -> None:
    """Context variables bound by the caller (structlog's rotation_id) are seen by the call."""
    REQUEST.set("rotation-42")
    with BlockingPool(max_workers=1) as pool:
        assert await pool.run_blocking(REQUEST.get) == "rotation-42"


async def test_at_most_max_workers_calls_run_at_once() -> None:
    """With max_workers=2, a third call waits until one of the running two ends."""
    started = threading.Semaphore(0)
    release = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        started.release()
        release.wait(timeout=10)
        with lock:
            running -= 1

    with BlockingPool(max_workers=2) as pool:
        tasks = [asyncio.ensure_future(pool.run_blocking(work)) for _ in range(3)]
        assert await asyncio.to_thread(started.acquire, True, 10)
        assert await asyncio.to_thread(started.acquire, True, 10)
        assert not await asyncio.to_thread(started.acquire, True, 0.2)
        release.set()
        await asyncio.gather(*tasks)
    assert peak == 2


async def test_loop_stays_responsive_while_calls_block() -> None:
    """While every worker is blocked, other coroutines on the loop still run: the blocked call
    waits for the loop to do something, which a loop blocked by that call never could."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    loop_ran = threading.Event()

    def work() -> bool:
        loop.call_soon_threadsafe(started.set)
        return loop_ran.wait(5)  # False if the loop could not run while this call blocked

    with BlockingPool(max_workers=1) as pool:
        blocked = asyncio.ensure_future(pool.run_blocking(work))
        await asyncio.wait_for(started.wait(), 1)  # the loop probe, run while work() blocks
        loop_ran.set()
        assert await blocked is True


async def test_shut_down_pool_refuses_calls() -> None:
    """After shutdown, run_blocking raises RuntimeError instead of queueing."""
    pool = BlockingPool(max_workers=1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        await pool.run_blocking(int)


def test_pool_needs_at_least_one_worker() -> None:
    """A pool of zero workers is refused."""
    with pytest.raises(ValueError, match="at least 1"):
        BlockingPool(max_workers=0)
