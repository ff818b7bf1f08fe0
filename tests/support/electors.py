"""Helpers for leader-election tests: a transition recorder to pass as ``on_change``."""

from __future__ import annotations

import asyncio

from rotator.daemon.control import Health


class Changes:
    """An ``on_change`` callback that records transitions and signals the first gain."""

    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.gained = asyncio.Event()

    def __call__(self, leading: bool) -> None:
        self.seen.append(leading)
        if leading:
            self.gained.set()

    async def wait_gained(self, timeout: float = 30.0) -> None:
        """Until the first gain (``timeout`` only guards against a hang)."""
        async with asyncio.timeout(timeout):
            await self.gained.wait()


def leading(health: Health) -> bool:
    """``health.leading`` read through a call (type checkers keep no stale narrowing)."""
    return health.leading
