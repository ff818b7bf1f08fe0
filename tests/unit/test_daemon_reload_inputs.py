"""A reload that would block (issue 12): it fails in bounded time and later SIGHUPs still apply."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from rotator import config
from rotator.daemon.runner import Daemon
from tests.unit.test_daemon_runner import Running, World, eventually
from tests.unit.test_daemon_runner import world as world  # noqa: PLC0414 - the fixture


async def _sighup_until(event: str) -> list[dict[str, object]]:
    with capture_logs() as logs:
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: any(e["event"] == event for e in logs), event)
    return [e for e in logs if e["event"] in {"config_reload_failed", "config_reloaded"}]


async def _next_valid_reload_applies(world: World, daemon: Daemon, first: str) -> None:
    """A valid file with a second target: the next SIGHUP applies it."""
    second = world.add_target()
    world.write_config()
    assert [e["event"] for e in await _sighup_until("config_reloaded")] == ["config_reloaded"]
    assert daemon.target_names() == [first, second]


def _with_admin_key_file(path: Path, key_file: Path) -> None:
    data = yaml.safe_load(path.read_text())
    data["mistral"]["admin_key_file"] = str(key_file)
    del data["mistral"]["admin_key"]
    path.write_text(yaml.safe_dump(data))


async def test_fifo_secret_fails_the_reload_at_once_and_the_next_one_applies(
    world: World, tmp_path: Path
) -> None:
    """SIGHUP with admin_key_file a FIFO: one config_reload_failed (it used to block the reload
    for good); then SIGHUP with a valid file applies it."""
    first = world.add_target()
    cfg = world.write_config()
    run = Running(world.daemon(cfg), handle_signals=True)
    daemon = await run.ready()
    try:
        fifo = tmp_path / "admin-key"
        os.mkfifo(fifo)
        _with_admin_key_file(world.config_path, fifo)
        [failed] = await _sighup_until("config_reload_failed")
        assert str(failed["error"]).endswith(
            "mistral.admin_key_file: the file named by admin_key_file is a FIFO, not a regular file"
        )
        assert daemon.cfg is cfg

        await _next_valid_reload_applies(world, daemon, first)
    finally:
        assert await run.stop() == 0


async def test_stuck_load_is_abandoned_and_the_next_sighup_applies(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration file that blocks (a FIFO nobody writes to) fails the reload after
    RELOAD_TIMEOUT_S instead of wedging it; the next SIGHUP with a valid file applies."""
    monkeypatch.setattr(config, "RELOAD_TIMEOUT_S", 0.5)
    first = world.add_target()
    cfg = world.write_config()
    run = Running(world.daemon(cfg), handle_signals=True)
    daemon = await run.ready()
    path = world.config_path
    try:
        path.unlink()
        os.mkfifo(path)
        [failed] = await _sighup_until("config_reload_failed")
        assert failed["error"] == f"{path}: not loaded within 0.5 s (a file that blocks?)"
        assert daemon.cfg is cfg
        # let the abandoned load go (it reads an empty file and its failure is dropped)
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        path.unlink()

        await _next_valid_reload_applies(world, daemon, first)
    finally:
        assert await run.stop() == 0
