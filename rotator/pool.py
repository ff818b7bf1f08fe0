"""A bounded thread pool for the synchronous SDKs (hvac, boto3), so the event loop never blocks.

Every blocking backend call goes through :meth:`BlockingPool.run_blocking`. At most
``max_workers`` calls run at once; more wait their turn in the executor's queue. The caller's
context variables (structlog's bound ``target``/``rotation_id``) travel into the worker thread.
A cancelled ``await`` does not stop the thread: the call runs to its end and its result is dropped,
which is why every backend operation is idempotent or check-and-set.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_MAX_WORKERS = 8


class BlockingPool:
    """A bounded executor for blocking calls, awaited from async code."""

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS, *, name: str = "rotator-io") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._closed = False

    async def run_blocking(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker thread and return (or raise) its outcome.

        Raises ``RuntimeError`` once the pool is shut down.
        """
        if self._closed:
            raise RuntimeError("the blocking pool is shut down")
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def shutdown(self, *, wait: bool = True) -> None:
        """Refuse new calls; with ``wait``, block until running calls end. Idempotent."""
        self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> BlockingPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


async def in_own_thread(call: Callable[[], T], *, timeout: float, name: str) -> T:
    """``call()`` on a new daemon thread: its result, or :class:`TimeoutError` after
    ``timeout`` seconds.

    For a call that may block for good (opening a FIFO nobody writes to): the thread is then
    abandoned, so it holds no pool worker, and being a daemon thread it does not keep the
    process from exiting.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():  # not given up on
            outcome()

    def deliver(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop ended while the call was stuck
            loop.call_soon_threadsafe(settle, outcome)

    def work() -> None:
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            deliver(functools.partial(done.set_exception, exc))
        else:
            deliver(functools.partial(done.set_result, result))

    threading.Thread(
        target=contextvars.copy_context().run, args=(work,), name=name, daemon=True
    ).start()
    return await asyncio.wait_for(done, timeout)
