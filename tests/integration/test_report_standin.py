"""`rotator report` as an operator runs it, against the Mistral stand-in.

Keys are created through the Admin API with the stand-in's clock set back (so their ages are
real ages in its listing), used through ``GET /v1/models`` at chosen dates (which sets
``last_used``), with and without expiration; the state store names some of them as targets'
current, retiring and adopted keys, as rotations would have.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator.clock import SystemClock
from rotator.contracts import ManagedKey, RetiringKey
from rotator.state import SqlStateStore
from rotator_dev.standin import StandinHandle

pytestmark = pytest.mark.integration

ROTATOR = str(Path(sys.executable).with_name("rotator"))


class Org:
    """Creates and uses keys on the stand-in at chosen times before ``now``."""

    def __init__(self, standin: StandinHandle) -> None:
        self.standin = standin
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.http = httpx.Client(
            base_url=standin.url,
            headers={"Authorization": f"Bearer {standin.admin_key}"},
            timeout=10,
        )

    def at(self, days_ago: float) -> None:
        self.standin.control.set_now(self.now - timedelta(days=days_ago), frozen=True)

    def create(
        self,
        name: str,
        *,
        days_ago: float,
        expires: bool = True,
        used_days_ago: float | None = None,
        workspace: str | None = None,
    ) -> str:
        self.at(days_ago)
        expiration = (self.now + timedelta(days=60)).date().isoformat() if expires else None
        answer = self.http.post(
            "/v1/admin/api-keys",
            json={
                "workspace_uuid": workspace or self.standin.workspace_id,
                "user_id": self.standin.user_id,
                "name": name,
                "expiration": expiration,
            },
        )
        answer.raise_for_status()
        created = answer.json()
        if used_days_ago is not None:
            self.at(used_days_ago)
            used = httpx.get(
                f"{self.standin.url}/v1/models",
                headers={"Authorization": f"Bearer {created['key']}"},
                timeout=10,
            )
            assert used.status_code == 200
        return str(created["key_id"])

    def back_to_now(self) -> None:
        self.standin.control.set_now(datetime.now(UTC), frozen=False)
        self.http.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, standin: StandinHandle, state_url: str, research: str) -> Path:
    vault = {
        "type": "vault",
        "url": f"http://127.0.0.1:{closed_port()}",  # never contacted by a report
        "auth": {"method": "token", "token": "unused"},
    }

    def target(name: str, workspace: str, **policy: Any) -> dict[str, Any]:
        dest = [{"store": "vault", "path": f"mistral/{name}", "field": "api_key"}]
        return {"name": name, "workspace_id": workspace, "destinations": dest, **policy}

    data = {
        "mistral": {
            "admin_url": standin.url,
            "api_url": standin.url,
            "admin_key": standin.admin_key,
            "user_id": standin.user_id,
        },
        "state": {"url": state_url},
        "stores": {"vault": vault},
        "defaults": {"max_age": "30d", "key_expiration": "45d"},
        "targets": [
            target("prod", standin.workspace_id),
            target("batch", standin.workspace_id, max_age="90d", key_expiration="120d"),
            target("lab", research, max_age="7d", key_expiration="30d"),
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


async def record_state(state_url: str, *, current: str, retiring: str, adopted: str) -> None:
    store = SqlStateStore(state_url, clock=SystemClock())
    try:
        await store.migrate()
        later = datetime.now(UTC) + timedelta(hours=1)
        await store.record_promotion(
            "prod",
            ManagedKey(current, "fp-current", None, None),
            retire=[RetiringKey("prod", retiring, None, later)],
        )
        await store.adopt_key("batch", adopted)
        await store.record_promotion("lab", ManagedKey("vanished-key", "fp-gone", None, None))
    finally:
        await store.close()


def rotator(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
    return subprocess.run(
        [ROTATOR, "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def world(standin: StandinHandle, tmp_path: Path) -> dict[str, Any]:
    """Keys of every kind in two configured workspaces (and one unconfigured), the state that
    names some of them, and the configuration file."""
    research = standin.control.add_workspace("Research")
    elsewhere = standin.control.add_workspace("Not configured")
    org = Org(standin)
    try:
        ids = {
            "legacy": org.create("legacy-manual", days_ago=100, expires=False, used_days_ago=95),
            "current": org.create("rotator-prod-a", days_ago=40, used_days_ago=0),
            "retiring": org.create("rotator-prod-b", days_ago=5, used_days_ago=1),
            "in_flight": org.create("rotator-batch-c", days_ago=2),
            "batch_old": org.create("rotator-batch-d", days_ago=60),
            "adopted": org.create("batch-by-hand", days_ago=20, used_days_ago=3),
            "notebook": org.create("notebook", days_ago=10, workspace=research, used_days_ago=10),
            "elsewhere": org.create("other-team", days_ago=3, workspace=elsewhere),
        }
    finally:
        org.back_to_now()
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    asyncio.run(
        record_state(
            state_url, current=ids["current"], retiring=ids["retiring"], adopted=ids["adopted"]
        )
    )
    config = write_config(tmp_path / "rotator.yaml", standin, state_url, research)
    return {"ids": ids, "config": str(config), "research": research, "today": org.now.date()}


def test_report_json_classifies_every_key(world: dict[str, Any], standin: StandinHandle) -> None:
    """--json: per configured workspace, each key's management, age, expiration and use
    findings, and the summary counts."""
    done = rotator("report", "--json", "--config", world["config"])
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    ids = world["ids"]
    assert doc["unused_days"] == 30
    default, research = doc["workspaces"]
    assert default["workspace_id"] == standin.workspace_id
    assert default["targets"] == ["prod", "batch"]
    assert research["workspace_id"] == world["research"]
    assert research["name"] == "Research"
    keys = {k["key_id"]: k for ws in doc["workspaces"] for k in ws["keys"]}
    assert ids["elsewhere"] not in keys
    assert set(keys) == set(ids.values()) - {ids["elsewhere"]}

    def facts(name: str) -> tuple[object, ...]:
        k = keys[ids[name]]
        return (
            k["target"],
            k["managed_as"],
            k["without_expiration"],
            k["older_than_max_age"],
            k["unused"],
        )

    assert facts("legacy") == (None, None, True, True, True)
    assert facts("current") == ("prod", "current", False, True, False)
    assert facts("retiring") == ("prod", "retiring", False, False, False)
    assert facts("in_flight") == ("batch", "prefix", False, False, False)
    assert facts("batch_old") == ("batch", "prefix", False, False, True)
    assert facts("adopted") == ("batch", "adopted", False, False, False)
    assert facts("notebook") == (None, None, False, True, False)
    assert keys[ids["legacy"]]["age_days"] == 100
    assert keys[ids["legacy"]]["last_used"] == (world["today"] - timedelta(days=95)).isoformat()
    assert keys[ids["current"]]["last_used"] == world["today"].isoformat()
    assert date.fromisoformat(keys[ids["current"]]["expiration_date"]) > world["today"]
    assert default["summary"] == {
        "keys": 6,
        "managed": 5,
        "unmanaged": 1,
        "without_expiration": 1,
        "older_than_max_age": 2,
        "unused": 2,
        "missing_current_keys": 0,
    }
    assert research["missing_current_keys"] == ["vanished-key"]
    assert research["summary"]["missing_current_keys"] == 1


def test_report_csv_with_a_shorter_unused_threshold(world: dict[str, Any]) -> None:
    """--csv --unused-days 10: one row per key, and the keys last used 10 days ago or created
    20 days ago unused are flagged too."""
    done = rotator("report", "--csv", "--unused-days", "10", "--config", world["config"])
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 7
    assert {r["workspace_name"] for r in rows} == {"Default Workspace", "Research"}
    ids = world["ids"]
    unused = {r["key_id"] for r in rows if r["unused"] == "true"}
    assert unused == {ids["legacy"], ids["batch_old"], ids["notebook"]}
    legacy = next(r for r in rows if r["key_id"] == ids["legacy"])
    assert (legacy["managed"], legacy["without_expiration"]) == ("false", "true")


def test_report_markdown_and_one_format_at_a_time(world: dict[str, Any]) -> None:
    """--markdown has a section per workspace naming missing current keys; two formats at
    once is a usage error (exit 2)."""
    markdown = rotator("report", "--markdown", "--config", world["config"])
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout.startswith("# rotator compliance report\n")
    assert f"## Research (`{world['research']}`)" in markdown.stdout
    assert "Current keys not listed by the Admin API: `vanished-key`" in markdown.stdout
    assert "| keys | managed | unmanaged |" in markdown.stdout
    both = rotator("report", "--json", "--csv", "--config", world["config"])
    assert both.returncode == 2
    assert "at most one of --json, --csv and --markdown" in both.stderr
