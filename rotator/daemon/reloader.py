"""SIGHUP: reload the configuration file, between rotations.

:class:`Reloader` loads the file as at start, on a thread of its own. An invalid configuration,
or one that changes settings only a restart applies (:func:`restart_only_changes`: ``state``,
``leader`` and ``server`` other than its token), is logged on one line and the old one kept. A
valid one closes the gate, waits until no rotation runs (those queued wait for the reload), then
replaces the engine, the notifier and the API's token, and has the planner place every job
again. A SIGHUP during a reload loads the file once more when it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import structlog

from rotator.config import Config, load_config
from rotator.daemon.notify import Notifier
from rotator.daemon.planner import Planner
from rotator.daemon.shared import Shared
from rotator.daemon.ui.source import ReloadRecord
from rotator.engine.engine import Engine
from rotator.errors import ConfigError
from rotator.logs import scrub

log = structlog.get_logger(__name__)


class Reloader:
    """The daemon's configuration reloads (see the module docstring).

    ``engine_factory`` and ``notifier_factory`` build the new configuration's engine and
    notifier; ``on_config`` hands a configuration just applied to the API (its token)."""

    def __init__(
        self,
        shared: Shared,
        planner: Planner,
        *,
        config_path: str | Path | None,
        engine_factory: Callable[[Config], Awaitable[Engine]],
        notifier_factory: Callable[[Config], Notifier],
        on_config: Callable[[Config], None],
    ) -> None:
        self._shared = shared
        self._planner = planner
        self._config_path = config_path
        self._engine_factory = engine_factory
        self._notifier_factory = notifier_factory
        self._on_config = on_config
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.loaded_at: datetime = shared.clock.now()
        """When the configuration in force was loaded (the start, or the last applied reload)."""
        self.last: ReloadRecord | None = None
        """The last reload's result, None before the first (the status page shows it)."""

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The reload under way or the last one, None before the first."""
        return self._task

    def request(self) -> None:
        """Reload now, or once more after the reload under way; nothing once stopping."""
        if self._shared.stop.is_set():
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._reload())

    async def _reload(self) -> None:
        while True:
            self._again = False
            await self._reload_once()
            if not self._again or self._shared.stop.is_set():
                return

    async def _reload_once(self) -> None:
        shared = self._shared
        log.info("config_reload_requested", config=str(self._config_path or "$ROTATOR_CONFIG"))
        shared.systemd.reloading()  # Type=notify-reload: RELOADING=1 now, READY=1 when done
        try:
            loaded = await self._load_for_reload()
            if loaded is not None:
                await self._apply(*loaded)
        finally:
            shared.systemd.ready(shared.status_line(len(self._planner.in_flight)))

    async def _load_for_reload(self) -> tuple[Config, Notifier] | None:
        """The new configuration and its notifier, or None (logged) if it cannot be applied.

        Loaded as at start (``--strict-permissions`` included) on a thread of its own, for at
        most ``config.RELOAD_TIMEOUT_S``: a load stuck on a file that never ends is reported and
        abandoned, and the next SIGHUP loads afresh.
        """
        from rotator import config
        from rotator.pool import in_own_thread

        limit = config.RELOAD_TIMEOUT_S
        path, strict = self._config_path, self._shared.cfg.strict_permissions
        try:
            new = await in_own_thread(
                lambda: load_config(path, strict_permissions=strict),
                timeout=limit,
                name="config-reload",
            )
            changed = restart_only_changes(self._shared.cfg, new)
            if changed:
                self._failed(f"{', '.join(changed)} changed: restart rotator to apply")
                return None
            return new, self._notifier_factory(new)
        except ConfigError as exc:
            self._failed(str(exc))
            return None
        except TimeoutError:
            self._failed(f"{path}: not loaded within {limit:g} s (a file that blocks?)")
            return None

    async def _apply(self, new: Config, notifier: Notifier) -> None:
        """Between rotations: a new engine, notifier and API for ``new``, and every job again."""
        shared = self._shared
        shared.gate.clear()
        self._planner.jobs.pause()
        try:
            await self._planner.wait_runs_or_stop()
            if shared.stop.is_set():
                return
            async with shared.engine_lock:
                try:
                    engine = await self._engine_factory(new)
                except Exception as exc:  # noqa: BLE001 - any failure keeps the old engine
                    self._failed(f"{type(exc).__name__}: {exc}")
                    await notifier.aclose()
                    return
                old, shared.engine, shared.cfg = shared.engine, engine, new
                old_notifier, shared.notifier = shared.notifier, notifier
                self._on_config(new)
                if old is not None:
                    await old.close()
                await old_notifier.aclose()
            log.info("config_reloaded", targets=len(new.targets))
            self.loaded_at = shared.clock.now()
            self._record(ok=True, message=f"{len(new.targets)} target(s)")
        finally:
            if not shared.stop.is_set():
                await self._replan_after_reload()

    def _failed(self, error: str) -> None:
        _reload_failed(error)
        self._record(ok=False, message=scrub(error))

    def _record(self, *, ok: bool, message: str) -> None:
        self.last = ReloadRecord(at=self._shared.clock.now(), ok=ok, message=message)

    async def _replan_after_reload(self) -> None:
        shared = self._shared
        try:
            if shared.leading():
                await self._planner.plan_all()
        except Exception:
            log.exception("rotation_planning_failed", target=None)
        finally:
            self._planner.jobs.resume()
            shared.gate.set()
            shared.revoke_wake.set()
            shared.metrics_wake.set()


def _reload_failed(error: str) -> None:
    """The one line a reload that changes nothing logs."""
    log.error("config_reload_failed", error=scrub(error), kept="previous configuration")


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The settings a reload cannot apply (they need a restart)."""
    changed = []
    if old.state != new.state:
        changed.append("state")
    if old.leader != new.leader:
        changed.append("leader")
    served = ("listen", "header_timeout", "idle_timeout", "max_connections")
    changed += [f"server.{s}" for s in served if getattr(old.server, s) != getattr(new.server, s)]
    return changed


__all__ = ["Reloader", "restart_only_changes"]
