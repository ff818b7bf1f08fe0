"""The status page of a real daemon in process (real engine, SQLite state, the Mistral stand-in,
in-memory destinations; HTTP on a free loopback port): its feed reads what the daemon did, the
page shows it after a login, reloads appear in the daemon panel, and ``server.ui`` and the
loopback rule decide whether ``/ui`` exists at all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from rotator.config import load_config
from rotator_dev.standin import StandinHandle
from tests.unit.test_daemon_runner import TOKEN, Running, World, eventually


@pytest.fixture
async def world(standin: StandinHandle, tmp_path: Path) -> World:
    return World(standin, tmp_path)


async def sign_in(client: httpx.AsyncClient) -> None:
    form = await client.get("/ui/login")
    csrf = re.search(r'name=csrf value="([^"]+)"', form.text)
    assert csrf is not None
    answer = await client.post("/ui/login", data={"csrf": csrf.group(1), "token": TOKEN})
    assert answer.status_code == 303


def mounted(app: Any) -> set[str]:
    return {getattr(route, "path", "") for route in app.routes}


async def test_the_page_shows_what_the_daemon_did(world: World) -> None:
    """After a rotation: the overview shows the target draining with its new key and the old
    one's deadline, the other idle; the target's page shows the rotation's journal as a
    timeline and the audit entries; a reload that applies, then one that fails, show in the
    daemon panel."""
    rotated, untouched = world.add_target(), world.add_target()
    run = Running(world.daemon(world.write_config()))
    daemon = await run.ready()
    try:
        daemon.request_rotation(rotated, emergency=False)
        await eventually(lambda: rotated not in daemon._tasks, "rotation finished")
        assert daemon.http is not None
        host, port = daemon.http.address
        base = f"http://{host}:{port}"
        async with httpx.AsyncClient(base_url=base) as anonymous:
            refused = await anonymous.get("/ui/")
            assert refused.status_code == 303
            assert rotated not in refused.text
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await sign_in(client)
            overview = (await client.get("/ui/")).text
            row = re.search(
                rf'<a href="targets/{rotated}">.*?</tr>|<a href="targets/{rotated}">.*', overview
            )
            assert row is not None
            assert '<span class="b draining">draining</span>' in row.group(0)
            state = await daemon.engine.get_target(rotated) if daemon.engine else None
            assert state is not None
            assert state.current is not None
            assert f"fp {state.current.fingerprint}" in row.group(0)
            assert state.retiring[0].key_id[:8] in row.group(0)
            assert (
                f'<a href="targets/{untouched}">{untouched}</a><td><span class="b idle">'
                in overview
            )
            assert "leader (this instance rotates)" in overview
            assert "none since the start" in overview
            page = (await client.get(f"/ui/targets/{rotated}")).text
            assert "<b>promoted</b>" in page
            for step in ("planned", "created", "verified", "readback_ok", "done"):
                assert f"<code>{step}</code>" in page, step
            assert f"staged memory:mistral/{rotated}#api_key" in page, "steps name destinations"
            assert "key.promoted" in page
            assert "rotation.started" in page
            assert state.current.key_id in page

            world.write_config(policy={"grace": "2h"})
            daemon.request_reload()
            await eventually(lambda: daemon.reloader.last is not None, "reloaded")
            assert "applied" in (await client.get("/ui/")).text
            world.config_path.write_text("targets: [oops\n")
            daemon.request_reload()
            await eventually(
                lambda: daemon.reloader.last is not None and not daemon.reloader.last.ok,
                "reload refused",
            )
            panel = (await client.get("/ui/")).text
            assert "<span class=bad>failed</span>" in panel
    finally:
        assert await run.stop() == 0


async def test_server_ui_false_and_a_tokenless_public_listener_serve_no_page(
    world: World,
) -> None:
    world.add_target()
    cfg = world.write_config()
    daemon = world.daemon(cfg)
    assert "/ui" in mounted(daemon._app(cfg))
    off = load_config(world.config_path).model_copy(
        update={"server": cfg.server.model_copy(update={"ui": False})}
    )
    assert "/ui" not in mounted(daemon._app(off))
    public = cfg.model_copy(
        update={
            "server": cfg.server.model_copy(update={"admin_token": None, "listen": "0.0.0.0:0"})
        }
    )
    assert "/ui" not in mounted(daemon._app(public))
    local = cfg.model_copy(update={"server": cfg.server.model_copy(update={"admin_token": None})})
    assert "/ui" in mounted(daemon._app(local))
    with capture_logs() as logs:
        daemon._log_ui(public)
        daemon._log_ui(cfg)
    assert [(e["event"], e.get("reason")) for e in logs] == [
        (
            "ui_not_served",
            "no server.admin_token and server.listen is not a loopback address",
        ),
        ("ui_serving", None),
    ]
