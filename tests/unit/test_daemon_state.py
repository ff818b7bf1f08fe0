"""What the daemon needs from the state store: a target's first sighting, kept across restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

from rotator.clock import FakeClock
from rotator.state import SqlStateStore
from tests.support.legacy_state.database import create_state_engine
from tests.support.legacy_state.migrations import migrate
from tests.support.legacy_state.models import TargetRow

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_register_target_stamps_first_seen_once(tmp_path: Path) -> None:
    """The first registration stamps first_seen_at; later ones (another process) keep it."""
    clock = FakeClock(START)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = SqlStateStore(url, clock=clock)
    await store.migrate()
    first = await store.register_target("prod-backend")
    assert first.first_seen_at == START
    assert first.last_rotated_at is None
    await store.close()
    clock.advance(3600)
    restarted = SqlStateStore(url, clock=clock)
    again = await restarted.register_target("prod-backend")
    assert again.first_seen_at == START
    assert (await restarted.get_target("prod-backend")) == again
    await restarted.close()


async def test_any_row_creation_stamps_first_seen(tmp_path: Path) -> None:
    """A target first created by a failure record (a CLI run) is stamped at that moment."""
    clock = FakeClock(START)
    store = SqlStateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    await store.migrate()
    state = await store.record_failure("t-1", backoff_until=None)
    assert state.first_seen_at == START
    clock.advance(60)
    assert (await store.register_target("t-1")).first_seen_at == START
    await store.close()


async def test_migration_backfills_first_seen_from_updated_at(tmp_path: Path) -> None:
    """Rows written before schema v3 get their updated_at as the first sighting."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    raw = create_state_engine(url)
    try:
        assert migrate(raw, now=START, upto=2) == 2
        with raw.begin() as conn:
            conn.execute(
                insert(TargetRow).values(target="old", consecutive_failures=0, updated_at=START)
            )
        store = SqlStateStore(url, clock=FakeClock(START))
        assert await store.migrate() == 4
        assert (await store.get_target("old")) is not None
        with raw.connect() as conn:
            seen = conn.execute(select(TargetRow.first_seen_at)).scalar_one()
        assert seen == START
        await store.close()
    finally:
        raw.dispose()
