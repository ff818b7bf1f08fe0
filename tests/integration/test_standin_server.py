"""Serving the stand-in: lifecycle of StandinServer, the foreground runner, logs, loopback guard."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
import structlog

from rotator_dev.standin import (
    DEFAULT_ADMIN_KEY,
    DEFAULT_WORKSPACE_ID,
    SEED_USER_ID,
    StandinControl,
    StandinHandle,
    StandinServer,
    StandinState,
    create_app,
)

pytestmark = pytest.mark.integration

KEYS = "/v1/admin/api-keys"
CREATE_BODY = {"workspace_uuid": DEFAULT_WORKSPACE_ID, "user_id": SEED_USER_ID, "name": "srv"}


def test_server_binds_a_free_port_and_releases_it_on_stop() -> None:
    """port=0 yields a real port that answers at once; after stop nothing listens there."""
    server = StandinServer(port=0, admin_key="other-admin-key")
    url = server.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert not url.endswith(":0")
        assert server.url == url
        ok = httpx.get(f"{url}{KEYS}", headers={"x-api-key": "other-admin-key"})
        assert ok.status_code == 200
        refused = httpx.get(f"{url}{KEYS}", headers={"x-api-key": DEFAULT_ADMIN_KEY})
        assert refused.status_code == 401
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}{KEYS}")


def test_server_is_a_context_manager_over_a_given_state() -> None:
    """A server started with a state serves that state, and the context manager stops it."""
    state = StandinState("ctx-admin-key")
    with StandinServer(state=state, admin_key="ctx-admin-key") as server:
        headers = {"Authorization": "Bearer ctx-admin-key"}
        created = httpx.post(f"{server.url}{KEYS}", json=CREATE_BODY, headers=headers)
        assert created.status_code == 200
        assert [k.key_id for k in state.key_facts()] == [created.json()["key_id"]]
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}{KEYS}")


def test_server_serves_ipv6_loopback() -> None:
    """An IPv6 host gets a bracketed URL that works."""
    server = StandinServer(host="::1")
    try:
        url = server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert url.startswith("http://[::1]:")
        response = httpx.get(f"{url}{KEYS}", headers={"x-api-key": DEFAULT_ADMIN_KEY})
        assert response.status_code == 200
    finally:
        server.stop()


def test_stop_ends_a_hang_in_progress_with_an_answer() -> None:
    """Stopping the server releases an endless hang, which answers 503 before shutdown."""
    server = StandinServer()
    url = server.start()
    outcome: list[object] = []

    def waiting_client() -> None:
        try:
            outcome.append(httpx.get(f"{url}/v1/admin/users", timeout=30).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    try:
        with StandinControl(url) as control:
            control.hang("list_users", None)
        client = threading.Thread(target=waiting_client)
        client.start()
        while server.state.request_counts()["list_users"] == 0:
            threading.Event().wait(0.01)
    finally:
        server.stop()
    client.join(timeout=30)
    assert outcome == [503]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_standin_prints_its_url_and_stops_cleanly_on_a_signal(sig: signal.Signals) -> None:
    """The foreground runner prints one URL line, serves, and exits 0 on Ctrl-C or SIGTERM."""
    code = "from rotator_dev.standin import run_standin; run_standin('127.0.0.1', 0, 'cli-key')"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.fullmatch(r"Mistral stand-in listening on (http://127\.0\.0\.1:\d+)\n", first)
        assert match, first
        url = match.group(1)
        created = httpx.post(f"{url}{KEYS}", json=CREATE_BODY, headers={"x-api-key": "cli-key"})
        assert created.status_code == 200
        plaintext = created.json()["key"]
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {plaintext}"})
        assert models.status_code == 200
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert plaintext not in out + err
    assert "cli-key" not in out + err
    assert "Mistral stand-in listening" not in out


def test_request_logs_carry_no_key(standin: StandinHandle) -> None:
    """The stand-in logs each request, never the plaintext or the admin key."""
    headers = {"Authorization": f"Bearer {standin.admin_key}"}
    with structlog.testing.capture_logs() as logs, httpx.Client(base_url=standin.url) as client:
        created = client.post(KEYS, json=CREATE_BODY, headers=headers).json()
        plaintext = created["key"]
        client.get("/v1/models", headers={"Authorization": f"Bearer {plaintext}"})
        client.get(KEYS, headers={"x-api-key": standin.admin_key})
        client.delete(f"{KEYS}/{created['key_id']}", headers=headers)

        # The server thread logs a request after answering it, and the fixture's reset (a control
        # call) may be logged after capture began: wait (bounded) for the four API requests.
        def api_requests() -> list[dict[str, Any]]:
            return [
                entry
                for entry in list(logs)
                if entry["event"] == "standin.request" and not entry["path"].startswith("/_standin")
            ]

        deadline = time.monotonic() + 10
        while len(api_requests()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        requests = api_requests()
    assert [(e["method"], e["path"]) for e in requests] == [
        ("POST", KEYS),
        ("GET", "/v1/models"),
        ("GET", KEYS),
        ("DELETE", f"{KEYS}/{created['key_id']}"),
    ]
    assert plaintext not in repr(logs)
    assert standin.admin_key not in repr(logs)


@pytest.mark.parametrize(
    ("client_host", "status"), [("203.0.113.7", 403), ("127.0.0.1", 200), ("::1", 200)]
)
async def test_control_api_answers_loopback_clients_only(client_host: str, status: int) -> None:
    """/_standin refuses clients that are not on a loopback address."""
    transport = httpx.ASGITransport(app=create_app(StandinState()), client=(client_host, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://standin") as client:
        assert (await client.get("/_standin/requests")).status_code == status
        assert (await client.post("/_standin/reset")).status_code == status
