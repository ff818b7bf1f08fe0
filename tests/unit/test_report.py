"""The compliance report's classification and formats, on a fake key listing and a real
SQLite state store."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.clock import FakeClock
from rotator.config import Config, parse_config
from rotator.contracts import ManagedKey, RetiringKey
from rotator.errors import PermanentError
from rotator.keys import ApiKey, Workspace
from rotator.report import Report, build_report
from rotator.state import SqlStateStore

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
WS = "019b2bd7-96e7-7219-8c0b-45a73da50088"
OTHER_WS = "7d0f9a6e-3f4c-4b8e-9a51-2c6d1e0b7f33"


class FakeIssuer:
    """The two listing calls of KeyIssuer the report uses."""

    def __init__(self, keys: Sequence[ApiKey], *, names_fail: bool = False) -> None:
        self.keys = list(keys)
        self.names_fail = names_fail

    async def list_keys(self, *, workspace_id: str | None = None) -> list[ApiKey]:
        return [k for k in self.keys if workspace_id is None or k.workspace_id == workspace_id]

    async def list_workspaces(self) -> list[Workspace]:
        if self.names_fail:
            raise PermanentError("mistral", "list_workspaces", "forbidden", status=403)
        return [Workspace(WS, "Prod | EU", False), Workspace(OTHER_WS, "Research", True)]


def key(
    key_id: str,
    name: str | None,
    *,
    age_days: float,
    last_used: date | None = None,
    expiration: date | None = date(2026, 6, 1),
    workspace: str = WS,
) -> ApiKey:
    return ApiKey(
        key_id=key_id,
        name=name,
        hidden_key=None,
        workspace_id=workspace,
        created_at=NOW - timedelta(days=age_days),
        expiration_date=expiration,
        last_used=last_used,
    )


def config(targets: list[dict[str, Any]]) -> Config:
    for index, target in enumerate(targets):
        target.setdefault("workspace_id", WS)
        target.setdefault("destinations", [{"store": "v", "path": f"p{index}", "field": "f"}])
    return parse_config(
        {
            "mistral": {"admin_key": "k", "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce"},
            "stores": {"v": {"type": "vault", "url": "http://127.0.0.1:1", "auth": {
                "method": "token", "token": "t"}}},
            "defaults": {"max_age": "30d", "key_expiration": "45d"},
            "targets": targets,
        }
    )  # fmt: skip


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStateStore]:
    """A migrated SQLite state store."""
    sql = SqlStateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=FakeClock(NOW))
    await sql.migrate()
    try:
        yield sql
    finally:
        await sql.close()


def rows(report: Report) -> dict[str, dict[str, object]]:
    return {k.key_id: k.as_dict() for ws in report.workspaces for k in ws.keys}


async def test_keys_are_classified_by_state_then_prefix(store: SqlStateStore) -> None:
    """State-store keys are current/retiring/adopted, prefixed names are managed by prefix,
    the rest unmanaged; the longest matching prefix names the target."""
    cfg = config(
        [
            {"name": "api"},
            {"name": "api-batch"},
        ]
    )
    await store.record_promotion(
        "api",
        ManagedKey("k-cur", "fp", None, None),
        retire=[RetiringKey("api", "k-old", None, NOW + timedelta(hours=1))],
    )
    await store.adopt_key("api-batch", "k-legacy")
    issuer = FakeIssuer(
        [
            key("k-cur", "rotator-api-20260330-aaaa", age_days=1),
            key("k-old", "rotator-api-20260201-bbbb", age_days=58),
            key("k-legacy", "handmade", age_days=200),
            key("k-fly", "rotator-api-batch-20260331-cccc", age_days=0),
            key("k-manual", "rotator-apiX", age_days=3),
            key("k-elsewhere", "rotator-api-x", age_days=3, workspace=OTHER_WS),
        ]
    )
    report = await build_report(cfg, issuer=issuer, store=store, now=NOW)
    found = rows(report)
    assert set(found) == {"k-cur", "k-old", "k-legacy", "k-fly", "k-manual"}
    assert (found["k-cur"]["target"], found["k-cur"]["managed_as"]) == ("api", "current")
    assert (found["k-old"]["target"], found["k-old"]["managed_as"]) == ("api", "retiring")
    assert found["k-legacy"]["managed_as"] == "adopted"
    assert found["k-legacy"]["target"] == "api-batch"
    assert (found["k-fly"]["target"], found["k-fly"]["managed_as"]) == ("api-batch", "prefix")
    assert found["k-manual"]["managed"] is False
    assert found["k-manual"]["target"] is None
    (ws,) = report.workspaces
    assert ws.name == "Prod | EU"
    assert ws.targets == ["api", "api-batch"]
    assert ws.summary()["managed"] == 4
    assert ws.summary()["unmanaged"] == 1


async def test_age_expiration_and_use_thresholds(store: SqlStateStore) -> None:
    """Older than the target's max_age (strictest for unmanaged keys), no expiration, and
    unused from exactly N days without use (or never used and created N days ago)."""
    cfg = config(
        [
            {"name": "fast", "max_age": "7d", "key_expiration": "30d"},
            {"name": "slow", "max_age": "90d", "key_expiration": "120d"},
        ]
    )
    today = NOW.date()
    issuer = FakeIssuer(
        [
            key("slow-60", "rotator-slow-a", age_days=60, last_used=today),
            key("fast-8", "rotator-fast-a", age_days=8, last_used=today - timedelta(days=29)),
            key("manual-8", "by-hand", age_days=8, expiration=None, last_used=None),
            key("manual-6", "by-hand-2", age_days=6.9, last_used=today - timedelta(days=30)),
            key("never-used-old", "by-hand-3", age_days=30, last_used=None),
        ]
    )
    found = rows(await build_report(cfg, issuer=issuer, store=store, now=NOW, unused_days=30))
    assert found["slow-60"]["older_than_max_age"] is False
    assert found["slow-60"]["max_age_days"] == 90
    assert found["fast-8"]["older_than_max_age"] is True
    assert found["manual-8"]["older_than_max_age"] is True  # held to the strictest: 7d
    assert found["manual-8"]["max_age_days"] == 7
    assert found["manual-6"]["older_than_max_age"] is False
    assert found["manual-8"]["without_expiration"] is True
    assert found["slow-60"]["without_expiration"] is False
    assert found["fast-8"]["unused"] is False  # used 29 days ago
    assert found["manual-6"]["unused"] is True  # used exactly 30 days ago
    assert found["manual-8"]["unused"] is False  # never used, but only 8 days old
    assert found["never-used-old"]["unused"] is True
    assert found["slow-60"]["age_days"] == 60


async def test_missing_current_keys_are_reported(store: SqlStateStore) -> None:
    """A current key the Admin API no longer lists is named in its workspace's entry."""
    cfg = config([{"name": "api"}])
    await store.record_promotion("api", ManagedKey("k-gone", "fp", None, None))
    report = await build_report(cfg, issuer=FakeIssuer([]), store=store, now=NOW)
    assert report.workspaces[0].missing_current_keys == ["k-gone"]
    assert report.workspaces[0].summary()["missing_current_keys"] == 1
    assert "k-gone" in report.to_text()


async def test_formats_carry_the_same_facts(store: SqlStateStore) -> None:
    """JSON, CSV and Markdown describe the same keys; Markdown escapes table pipes."""
    cfg = config([{"name": "api"}, {"name": "lab", "workspace_id": OTHER_WS}])
    issuer = FakeIssuer(
        [
            key("k1", "rotator-api-x", age_days=40),
            key("k2", "a|b", age_days=1, expiration=None),
            key("k3", "notebook", age_days=2, workspace=OTHER_WS),
        ]
    )
    report = await build_report(cfg, issuer=issuer, store=store, now=NOW, unused_days=10)
    doc = json.loads(report.to_json())
    assert doc["generated_at"] == "2026-03-31T12:00:00Z"
    assert doc["unused_days"] == 10
    assert [w["workspace_id"] for w in doc["workspaces"]] == [WS, OTHER_WS]
    assert doc["workspaces"][1]["archived"] is True
    assert doc["workspaces"][0]["summary"] == {
        "keys": 2,
        "managed": 1,
        "unmanaged": 1,
        "without_expiration": 1,
        "older_than_max_age": 1,
        "unused": 1,
        "missing_current_keys": 0,
    }
    table = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["key_id"] for r in table] == ["k1", "k2", "k3"]
    assert table[0]["workspace_name"] == "Prod | EU"
    assert table[0]["older_than_max_age"] == "true"
    assert table[1]["expiration_date"] == ""
    markdown = report.to_markdown()
    assert "## Prod \\| EU (`019b2bd7-96e7-7219-8c0b-45a73da50088`)" in markdown
    assert "| k2 | a\\|b | no |" in markdown
    assert "Archived workspace." in markdown


async def test_workspace_names_are_optional(store: SqlStateStore) -> None:
    """When the workspaces cannot be listed, the report is made without their names."""
    cfg = config([{"name": "api"}])
    issuer = FakeIssuer([key("k1", "rotator-api-x", age_days=1)], names_fail=True)
    report = await build_report(cfg, issuer=issuer, store=store, now=NOW)
    assert report.workspaces[0].name is None
    assert report.workspaces[0].archived is None
    assert len(report.workspaces[0].keys) == 1


async def test_no_targets_no_workspaces(store: SqlStateStore) -> None:
    """A configuration without targets reports no workspace and lists nothing."""
    issuer = FakeIssuer([key("k1", "x", age_days=1)])
    report = await build_report(config([]), issuer=issuer, store=store, now=NOW)
    assert report.workspaces == []
    assert report.to_text() == "no workspaces configured\n"
    with pytest.raises(ValueError, match="unused_days"):
        await build_report(config([]), issuer=issuer, store=store, now=NOW, unused_days=0)


async def test_key_shaped_names_are_masked(store: SqlStateStore) -> None:
    """A key named with something shaped like a plaintext key is reported with it masked."""
    shaped = "Zq8Xk2VbN4mR7tYpL1sD3fG5hJ6wE9aC"
    cfg = config([{"name": "api"}])
    report = await build_report(
        cfg, issuer=FakeIssuer([key("k1", f"oops {shaped}", age_days=1)]), store=store, now=NOW
    )
    for text in (report.to_json(), report.to_csv(), report.to_markdown(), report.to_text()):
        assert shaped not in text
