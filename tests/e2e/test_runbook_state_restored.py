"""docs/runbooks/state-restored-or-lost.md, followed on a real stand-in, OpenBao and moto.

The state database is an SQLite file: it is backed up with SQLite's online backup, two rotations
run, and the backup is copied back (the operator's restore). Then the runbook's steps, with the
installed ``rotator`` console script.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.test_runbook_restore_previous_value import rotator, served
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite database (the online backup API), WAL included."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def test_after_a_state_restore_the_served_key_is_adopted_and_only_unserved_orphans_swept(
    stack: Stack, tmp_path: Path
) -> None:
    """Keys created after the backup are orphans: the served one is never swept and, adopted,
    is retired by the next rotation with the restored current key; the other is swept."""
    database = tmp_path / "state.db"
    state_url = f"sqlite:///{database}"
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    config = stack.write_config(tmp_path / "rotator.yaml", state_url=state_url)
    assert rotator(stack, config, "rotate", spec.name).returncode == 0
    copy_database(database, tmp_path / "backup.db")
    after_backup = []
    for _ in range(2):
        done = rotator(stack, config, "rotate", spec.name, "--json")
        assert done.returncode == 0, done.stderr
        after_backup.append(json.loads(done.stdout)[0]["new_key_id"])
    replaced_id, served_id = after_backup
    (served_key,) = served(stack, spec)
    database.unlink()
    for leftover in tmp_path.glob("state.db-*"):
        leftover.unlink()
    copy_database(tmp_path / "backup.db", database)

    listed = rotator(stack, config, "recover", "--json")
    assert listed.returncode == 1
    orphans = {o["key_id"]: o for o in json.loads(listed.stdout)["orphans"]}
    assert set(orphans) == {replaced_id, served_id}
    assert not any(o["deleted"] for o in orphans.values())
    assert "served by a destination" in orphans[served_id]["why"]

    assert rotator(stack, config, "adopt", spec.name, "--key-id", served_id).returncode == 0
    rotated = rotator(stack, config, "rotate", spec.name, "--json")
    assert rotated.returncode == 0, rotated.stderr
    history = json.loads(rotator(stack, config, "history", spec.name, "--json").stdout)
    finished = next(e for e in history if e["event"] == "rotation.finished")  # newest first
    assert served_id in finished["facts"]["old_key_ids"]
    assert len(finished["facts"]["old_key_ids"]) == 2
    assert stack.key_works(served_key)  # in its grace: nothing revoked yet

    swept = rotator(stack, config, "recover", "--sweep-orphans", "--json")
    assert swept.returncode == 0, swept.stdout
    assert [(o["key_id"], o["deleted"]) for o in json.loads(swept.stdout)["orphans"]] == [
        (replaced_id, True)
    ]
    assert stack.key_works(served_key)
