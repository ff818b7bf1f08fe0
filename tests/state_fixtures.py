"""The state store's contract suite, run against SQLite and against a real PostgreSQL server.

``StoreContract`` holds every behaviour :class:`rotator.contracts.StateStore` promises. A test
module subclasses it as ``Test…`` and provides one fixture, ``fresh_url``: a factory of URLs of
new, empty databases on the backend under test (tests/unit/test_state_store.py for SQLite,
tests/integration/test_state_postgres.py for PostgreSQL).
"""

from __future__ import annotations

import asyncio
import secrets
import string
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, MetaData, delete, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from rotator.clock import FakeClock
from rotator.contracts import (
    TERMINAL_STATES,
    AuditAnchor,
    JsonValue,
    ManagedKey,
    PromotedValue,
    RetiringKey,
    StagedValue,
)
from rotator.errors import ConflictError
from rotator.secret import Secret
from rotator.state import LATEST_SCHEMA, SchemaError, SchemaTooNewError, SqlStateStore
from rotator.state import audit as audit_chain
from rotator.state.migrations import GENESIS_HASH
from tests.support.legacy_state import LegacyStateStore
from tests.support.legacy_state import audit as legacy_audit
from tests.support.legacy_state.database import create_state_engine
from tests.support.legacy_state.migrations import migrate
from tests.support.legacy_state.models import (
    AuditHeadRow,
    AuditRow,
    Base,
    JournalRow,
    RetiringKeyRow,
    RotationRow,
    TargetRow,
)

T = TypeVar("T")
TARGET = "prod-backend"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def key_id() -> str:
    """A Mistral-style key id (a UUID string)."""
    return str(uuid.uuid4())


def managed_key(rotation_id: str | None = None, fingerprint: str = "0123456789ab") -> ManagedKey:
    return ManagedKey(
        key_id=key_id(),
        fingerprint=fingerprint,
        created_at=START,
        expiration=date(2026, 4, 15),
        rotation_id=rotation_id,
    )


def key_shaped_secret() -> Secret:
    """A plaintext shaped like a Mistral key: 32 letters and digits."""
    return Secret("".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32)))


def odd_secret() -> Secret:
    """A plaintext no pattern recognises: only the recent-plaintext scrubber knows it."""
    return Secret(f"live.{uuid.uuid4().hex[:10]}.{uuid.uuid4().hex[:10]}.{uuid.uuid4().hex[:6]}")


def run_concurrently(
    stores: list[SqlStateStore], call: Callable[[SqlStateStore], Coroutine[Any, Any, T]]
) -> list[T | Exception]:
    """Run ``call(store)`` for each store on its own thread and event loop, all released at once
    by a barrier; returns each result or the exception it raised."""
    barrier = threading.Barrier(len(stores))
    results: list[T | Exception] = [RuntimeError("did not run")] * len(stores)

    def worker(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[index] = asyncio.run(call(stores[index]))
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    return results


async def scripted_run(store: SqlStateStore, clock: FakeClock, plaintexts: list[Secret]) -> None:
    """A full rotation's store calls carrying fingerprints, with every attempt to smuggle a
    plaintext that a careless engine could make; the refused ones must raise."""
    new, odd = plaintexts
    old_id = key_id()
    await store.adopt_key(TARGET, old_id)
    rotation = await store.start_rotation(TARGET, old_key_ids=[old_id], new_key_name="rotator-x-1")
    rid = rotation.rotation_id
    await store.append_step(rid, "planned", {"key_name": "rotator-x-1"}, state="planned")
    new_id = key_id()
    await store.update_rotation(rid, new_key_id=new_id, new_key_fingerprint=new.fingerprint)
    await store.append_step(rid, "created", {"key_id": new_id, "fingerprint": new.fingerprint})
    await store.append_step(rid, "verified", {"fingerprint": new.fingerprint, "elapsed": 1.5})
    staged = StagedValue("aws:mistral/prod", rid, new_id, new.fingerprint, "v-1", rid)
    await store.append_step(rid, "staged", {"destinations": [staged.to_record()]})
    # Error text that quotes a plaintext is scrubbed, not refused: a failure is always recorded.
    await store.update_rotation(rid, error=f"vault refused {new.reveal()} and {odd.reveal()}")
    await store.append_step(rid, "promote_failed", {"error": f"bad value {odd.reveal()}"})
    await store.append_audit("promotion.retried", target=TARGET, facts={"reason": new.reveal()})
    # Identifiers that carry a plaintext are refused.
    refused: list[tuple[type[Exception], Callable[[], Coroutine[Any, Any, object]]]] = [
        (ValueError, lambda: store.append_step(rid, "readback_ok", {"version": new.reveal()})),
        (ValueError, lambda: store.update_rotation(rid, new_key_name=odd.reveal())),
        (ValueError, lambda: store.append_audit("x", facts={new.reveal(): "as a dict key"})),
        (ValueError, lambda: store.adopt_key(TARGET, new.reveal())),
        (TypeError, lambda: store.append_step(rid, "readback_ok", {"value": new})),  # type: ignore[dict-item]
        (TypeError, lambda: store.update_rotation(rid, new_key_name=new)),  # type: ignore[arg-type]
    ]
    for error, attempt in refused:
        with pytest.raises(error, match=r"looks like a credential|Secret is never stored"):
            await attempt()
    promoted = PromotedValue("aws:mistral/prod", rid, new_id, new.fingerprint, rid, "v-1")
    await store.append_step(rid, "promoted", {"destinations": [promoted.to_record()]})
    due = clock.now() + timedelta(hours=1)
    await store.record_promotion(
        TARGET,
        ManagedKey(new_id, new.fingerprint, clock.now(), date(2026, 4, 15), rid),
        retire=[RetiringKey(TARGET, old_id, None, due, rid)],
    )
    await store.finish_rotation(rid, state="done", outcome="promoted")
    clock.advance(3600)
    for entry in await store.revocations_due():
        await store.revocation_done(entry.target, entry.key_id)
    await store.record_failure("other-target", backoff_until=clock.now() + timedelta(hours=1))


def table_dump(engine: Engine) -> str:
    """Every row of every table, as text."""
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return "\n".join(
            repr(row) for table in metadata.sorted_tables for row in conn.execute(select(table))
        )


def schema_of(engine: Engine) -> dict[str, Any]:
    """Tables with their columns (type, nullability, default), keys and indexes."""
    insp = inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        out[table] = {
            "columns": {
                c["name"]: (str(c["type"]), c["nullable"], c.get("default"))
                for c in insp.get_columns(table)
            },
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"], str(fk.get("options")))
                for fk in insp.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (
                    i["name"],
                    tuple(i["column_names"]),
                    i["unique"],
                    sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items()),
                )
                for i in insp.get_indexes(table)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
            ),
        }
    return out


async def everything(store: SqlStateStore) -> dict[str, Any]:
    """What the API reads of a store: targets, rotations, their journals, the audit log and
    its verdict."""
    rotations = await store.list_rotations(limit=1000)
    return {
        "targets": await store.list_targets(),
        "rotations": rotations,
        "open": await store.open_rotations(),
        "journals": [await store.journal(r.rotation_id) for r in rotations],
        "audit": await store.audit_events(),
        "head": await store.audit_head(),
        "verdict": await store.verify_audit(),
        "due": await store.revocations_due(),
    }


def fill_legacy_rows(engine: Engine, version: int) -> None:
    """Rows of every table as the SQLAlchemy store wrote them at schema ``version`` (1 to 3):
    a target with a key and failures, a finished and an open rotation with their journals,
    a retiring key and a chained audit log (with its head from v2). The same every time."""
    ids = iter(str(uuid.UUID(int=n)) for n in range(1, 100))
    rid, done = next(ids), next(ids)
    target: dict[str, Any] = {
        "target": TARGET,
        "key_id": next(ids),
        "key_fingerprint": "aaaaaaaaaaaa",
        "key_created_at": START,
        "key_expiration": date(2026, 5, 1),
        "key_rotation_id": done,
        "last_rotated_at": START + timedelta(minutes=1),
        "consecutive_failures": 2,
        "backoff_until": START + timedelta(hours=1),
        "updated_at": START + timedelta(minutes=2),
    }
    if version >= 2:
        target["adopted_key_id"] = next(ids)
    if version >= 3:
        target["first_seen_at"] = START - timedelta(days=1)
    rotation: dict[str, Any] = {
        "target": TARGET,
        "state": "created",
        "started_at": START,
        "finished_at": None,
        "outcome": None,
        "error": None,
        "emergency": True,
        "new_key_id": next(ids),
        "new_key_name": "rotator-x-1",
        "new_key_fingerprint": "bbbbbbbbbbbb",
        "old_key_ids": [next(ids), next(ids)],
    }
    with engine.begin() as conn:
        conn.execute(insert(TargetRow.__table__).values(target))
        conn.execute(
            insert(RotationRow),
            [
                {**rotation, "rotation_id": done, "finished_at": START, "outcome": "rotated",
                 "state": "done", "error": "vault said *** was wrong"},
                {**rotation, "rotation_id": rid},
            ],
        )  # fmt: skip
        conn.execute(
            insert(JournalRow),
            [
                {"rotation_id": r, "seq": n, "step": step, "at": START, "facts": facts}
                for r in (rid, done)
                for n, (step, facts) in enumerate(
                    [("planned", {}), ("created", {"key_id": "k-2", "big": 1e20, "t": "clé"})], 1
                )
            ],
        )
        conn.execute(
            insert(RetiringKeyRow),
            {
                "target": TARGET,
                "key_id": next(ids),
                "fingerprint": "cccccccccccc",
                "rotation_id": done,
                "revoke_due_at": START + timedelta(hours=2),
                "added_at": START,
            },
        )
        previous = GENESIS_HASH
        for seq in (1, 2, 3):
            row: dict[str, Any] = {
                "seq": seq,
                "at": START + timedelta(seconds=seq),
                "event": "legacy",
                "target": TARGET if seq != 2 else None,
                "rotation_id": rid,
                "facts": {"n": seq, "nested": [1.5, None, "x"]},
            }
            previous = audit_chain.row_hash(AuditRow(**row), previous)
            conn.execute(insert(AuditRow.__table__).values(**row, hash=previous))
        if version >= 2:
            conn.execute(update(AuditHeadRow).values(seq=3, hash=previous))


AUDIT_KEY = Secret("k" * 16 + secrets.token_hex(16))
"""An HMAC key as ``audit.hmac_key_file`` would hold it."""


def rechain(raw: Engine, first: int, **changes: Any) -> None:
    """What someone who can write the database but lacks the HMAC key can do: change rows from
    ``first`` on (``changes``, e.g. ``hmac_key_id=None``), recompute their hashes with plain
    SHA-256 and move the recorded head to match."""
    with raw.begin() as conn:
        rows = [audit_chain.decode(r) for r in conn.execute(legacy_audit.STORED.order_by("seq"))]
        previous = rows[first - 2].hash if first > 1 else GENESIS_HASH
        for row in rows[first - 1 :]:
            for name, value in changes.items():
                setattr(row, name, value)
            previous = audit_chain.row_hash(row, previous)
            values = {**changes, "hash": previous}
            conn.execute(update(AuditRow).where(AuditRow.seq == row.seq).values(**values))
        conn.execute(update(AuditHeadRow).values(seq=rows[-1].seq, hash=previous))


class StoreContract:
    """The behaviours every StateStore backend must show."""

    @pytest.fixture
    def fresh_url(self) -> Callable[[], str]:
        raise NotImplementedError("the backend's test module provides fresh_url")

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock(START)

    @pytest.fixture
    def store_url(self, fresh_url: Callable[[], str]) -> str:
        return fresh_url()

    @pytest.fixture
    async def make_store(
        self, store_url: str, clock: FakeClock
    ) -> AsyncIterator[Callable[..., SqlStateStore]]:
        stores: list[SqlStateStore] = []

        def make(audit_key: Secret | None = None) -> SqlStateStore:
            stores.append(SqlStateStore(store_url, clock=clock, audit_key=audit_key))
            return stores[-1]

        yield make
        for store in stores:
            await store.close()

    @pytest.fixture
    async def store(self, make_store: Callable[[], SqlStateStore]) -> SqlStateStore:
        store = make_store()
        await store.migrate()
        return store

    @pytest.fixture
    def raw(self, store_url: str) -> Iterator[Engine]:
        """A second engine on the same database, for what the API cannot do (tampering)."""
        engine = create_state_engine(store_url)
        yield engine
        engine.dispose()

    # --- migrations ---------------------------------------------------------------------

    async def test_migrate_creates_the_latest_schema_and_is_idempotent(
        self, make_store: Callable[[], SqlStateStore], raw: Engine
    ) -> None:
        """Migrating an empty database reaches the latest version; migrating again changes
        nothing."""
        store = make_store()
        assert await store.migrate() == LATEST_SCHEMA
        assert await store.migrate() == LATEST_SCHEMA
        with raw.connect() as conn:
            versions = conn.execute(text("SELECT version FROM schema_version ORDER BY 1")).all()
        assert [v for (v,) in versions] == list(range(1, LATEST_SCHEMA + 1))

    async def test_migrated_schema_matches_the_models(
        self, store: SqlStateStore, raw: Engine, fresh_url: Callable[[], str]
    ) -> None:
        """The schema the migrations build is exactly the one the ORM models describe."""
        reference = create_state_engine(fresh_url())
        try:
            Base.metadata.create_all(reference)
            assert schema_of(raw) == schema_of(reference)
        finally:
            reference.dispose()

    async def test_migrating_from_v1_keeps_every_row(
        self, make_store: Callable[[], SqlStateStore], raw: Engine, clock: FakeClock
    ) -> None:
        """A database written at schema v1 is upgraded in place: its targets, rotations,
        journal and audit chain survive and stay usable."""
        assert migrate(raw, now=START, upto=1) == 1
        rid, old_id = str(uuid.uuid4()), key_id()
        with raw.begin() as conn:
            # Only columns that exist at v1 are named, so these inserts fit the v1 tables.
            conn.execute(
                insert(TargetRow).values(
                    target=TARGET,
                    key_id=old_id,
                    key_fingerprint="aaaaaaaaaaaa",
                    key_expiration=date(2026, 5, 1),
                    consecutive_failures=2,
                    updated_at=START,
                )
            )
            conn.execute(
                insert(RotationRow).values(
                    rotation_id=rid,
                    target=TARGET,
                    state="created",
                    started_at=START,
                    emergency=False,
                    old_key_ids=[old_id],
                )
            )
            conn.execute(
                insert(JournalRow),
                [
                    {"rotation_id": rid, "seq": 1, "step": "planned", "at": START, "facts": {}},
                    {
                        "rotation_id": rid,
                        "seq": 2,
                        "step": "created",
                        "at": START,
                        "facts": {"key_id": "k-2"},
                    },
                ],
            )
        with raw.begin() as conn:
            previous = GENESIS_HASH
            for seq in (1, 2):
                v1: dict[str, Any] = {
                    "seq": seq,
                    "at": START,
                    "event": "legacy",
                    "target": TARGET,
                    "rotation_id": rid,
                    "facts": {},
                }
                previous = audit_chain.row_hash(AuditRow(**v1), previous)
                conn.execute(insert(AuditRow).values(**v1, hash=previous))

        store = make_store()
        assert await store.migrate() == LATEST_SCHEMA

        state = await store.get_target(TARGET)
        assert state is not None
        assert state.current is not None
        assert (state.current.key_id, state.current.expiration) == (old_id, date(2026, 5, 1))
        assert (state.consecutive_failures, state.adopted_key_id) == (2, None)
        [rotation] = await store.open_rotations()
        assert (rotation.rotation_id, rotation.state, rotation.old_key_ids) == (
            rid,
            "created",
            (old_id,),
        )
        assert [(e.seq, e.step, e.facts) for e in await store.journal(rid)] == [
            (1, "planned", {}),
            (2, "created", {"key_id": "k-2"}),
        ]
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.rows) == (True, 2)
        await store.append_step(rid, "verified")
        await store.finish_rotation(rid, state="rolled_back", outcome="rolled_back")
        assert await store.adopt_key(TARGET, key_id())
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.rows) == (True, 4)

    async def test_refuses_a_schema_newer_than_the_code(
        self, store: SqlStateStore, raw: Engine
    ) -> None:
        """A database migrated by a newer rotator is refused with a one-line error naming both
        versions, and left untouched."""
        newer = LATEST_SCHEMA + 1
        with raw.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO schema_version (version, description, applied_at)"
                    " VALUES (:v, 'from the future', :now)"
                ),
                {"v": newer, "now": START},
            )
        with pytest.raises(SchemaTooNewError) as caught:
            await store.migrate()
        message = str(caught.value)
        assert f"v{newer}" in message
        assert f"v{LATEST_SCHEMA}" in message
        assert "\n" not in message
        with raw.connect() as conn:
            assert conn.execute(text("SELECT max(version) FROM schema_version")).scalar() == newer

    async def test_refuses_rotator_tables_without_a_schema_version(
        self, make_store: Callable[[], SqlStateStore], raw: Engine
    ) -> None:
        """Tables of ours with no schema_version are refused rather than migrated over."""
        migrate(raw, now=START, upto=1)
        with raw.begin() as conn:
            conn.execute(text("DROP TABLE schema_version"))
        with pytest.raises(SchemaError, match="without a schema_version"):
            await make_store().migrate()

    async def test_concurrent_migrations_apply_each_version_once(
        self, make_store: Callable[[], SqlStateStore], raw: Engine
    ) -> None:
        """Several processes migrating at once end with one schema and one row per version."""
        stores = [make_store() for _ in range(4)]
        results = await asyncio.to_thread(run_concurrently, stores, lambda s: s.migrate())
        assert results == [LATEST_SCHEMA] * 4
        with raw.connect() as conn:
            versions = conn.execute(text("SELECT version FROM schema_version ORDER BY 1")).all()
        assert [v for (v,) in versions] == list(range(1, LATEST_SCHEMA + 1))

    # --- databases written by the SQLAlchemy store (before issue 14) ---------------------

    @pytest.mark.parametrize("version", range(LATEST_SCHEMA))
    async def test_upgrading_matches_the_sqlalchemy_migrations(
        self, fresh_url: Callable[[], str], version: int
    ) -> None:
        """A database the SQLAlchemy store left at any version, rows and all, upgrades to the
        very schema and rows its own migrations made of it, and its audit chain verifies."""
        urls = {"sqlalchemy": fresh_url(), "stdlib": fresh_url()}
        engines = {name: create_state_engine(url) for name, url in urls.items()}
        try:
            for engine in engines.values():
                if version:  # else an empty database
                    migrate(engine, now=START, upto=version)
                    fill_legacy_rows(engine, version)
            migrate(engines["sqlalchemy"], now=START)
            store = SqlStateStore(urls["stdlib"], clock=FakeClock(START))
            assert await store.migrate() == LATEST_SCHEMA
            assert (await store.verify_audit()).ok
            await store.close()
            assert schema_of(engines["stdlib"]) == schema_of(engines["sqlalchemy"])
            assert table_dump(engines["stdlib"]) == table_dump(engines["sqlalchemy"])
        finally:
            for engine in engines.values():
                engine.dispose()

    async def test_a_database_the_sqlalchemy_store_wrote_reads_the_same_and_goes_on(
        self, store_url: str, clock: FakeClock
    ) -> None:
        """Everything the SQLAlchemy store wrote in a full run (HMAC-chained audit rows
        included) reads back equal through this store, which then writes on; and the old store
        still reads what this one wrote (a roll back of rotator keeps working)."""
        legacy = LegacyStateStore(store_url, clock=clock, audit_key=AUDIT_KEY)
        await legacy.migrate()
        await scripted_run(legacy, clock, [key_shaped_secret(), odd_secret()])  # type: ignore[arg-type]
        store = SqlStateStore(store_url, clock=clock, audit_key=AUDIT_KEY)
        try:
            assert await store.migrate() == LATEST_SCHEMA
            assert await everything(store) == await everything(legacy)  # type: ignore[arg-type]
            rotation = await store.start_rotation(TARGET, new_key_name="rotator-x-2")
            await store.append_step(rotation.rotation_id, "planned", {"n": 1.5}, state="planned")
            await store.finish_rotation(rotation.rotation_id, state="done", outcome="rotated")
            await store.record_promotion(TARGET, managed_key(rotation.rotation_id))
            assert await everything(legacy) == await everything(store)  # type: ignore[arg-type]
            verdict = await legacy.verify_audit()
            assert (verdict.ok, verdict.keyed) == (True, verdict.rows)
        finally:
            await store.close()
            await legacy.close()

    # --- targets ------------------------------------------------------------------------

    async def test_unknown_target_has_no_state(self, store: SqlStateStore) -> None:
        """A target the store never heard of has no state and is not listed."""
        assert await store.get_target(TARGET) is None
        assert await store.list_targets() == []

    async def test_promotion_sets_the_current_key_and_schedules_the_old(
        self, store: SqlStateStore, clock: FakeClock
    ) -> None:
        """Promotion makes the key current, stamps last_rotated_at, clears failures and backoff,
        schedules the replaced keys and forgets a retired adopted key."""
        adopted = key_id()
        await store.adopt_key(TARGET, adopted)
        await store.record_failure(TARGET, backoff_until=START + timedelta(hours=1))
        clock.advance(60)
        key = managed_key("5f0c6a54-59a8-4b7b-9d0e-1f2a3b4c5d6e")
        due = clock.now() + timedelta(hours=1)
        state = await store.record_promotion(
            TARGET, key, retire=[RetiringKey(TARGET, adopted, None, due, key.rotation_id)]
        )
        assert state.current == key
        assert state.last_rotated_at == clock.now()
        assert (state.consecutive_failures, state.backoff_until, state.adopted_key_id) == (
            0,
            None,
            None,
        )
        assert state.retiring == (RetiringKey(TARGET, adopted, None, due, key.rotation_id),)
        assert await store.get_target(TARGET) == state
        assert await store.list_targets() == [state]
        events = await store.audit_events(TARGET)
        assert events[0].event == "key.promoted"
        assert events[0].facts["key_id"] == key.key_id

    async def test_promoting_the_same_key_again_changes_nothing(
        self, store: SqlStateStore, clock: FakeClock
    ) -> None:
        """A repeated promotion keeps last_rotated_at and writes no second audit event."""
        key = managed_key()
        first = await store.record_promotion(TARGET, key)
        clock.advance(600)
        again = await store.record_promotion(TARGET, key)
        assert again == first
        assert [e.event for e in await store.audit_events()] == ["key.promoted"]

    async def test_promotion_refuses_inconsistent_retirements(self, store: SqlStateStore) -> None:
        """Retiring another target's key, or the key being promoted, is refused."""
        key = managed_key()
        due = START + timedelta(hours=1)
        with pytest.raises(ValueError, match="belongs to target"):
            await store.record_promotion(
                TARGET, key, retire=[RetiringKey("other", key_id(), None, due)]
            )
        with pytest.raises(ValueError, match="being promoted"):
            await store.record_promotion(
                TARGET, key, retire=[RetiringKey(TARGET, key.key_id, None, due)]
            )
        assert await store.get_target(TARGET) is None

    async def test_adoption_is_declared_withdrawn_and_audited(self, store: SqlStateStore) -> None:
        """An adopted key id is stored, withdrawn with None, refused if it is the managed key,
        and each change is audited once."""
        adopted = key_id()
        assert (await store.adopt_key(TARGET, adopted)).adopted_key_id == adopted
        assert (await store.adopt_key(TARGET, adopted)).adopted_key_id == adopted
        assert (await store.adopt_key(TARGET, None)).adopted_key_id is None
        key = managed_key()
        await store.record_promotion(TARGET, key)
        with pytest.raises(ValueError, match="already"):
            await store.adopt_key(TARGET, key.key_id)
        events = [e.event for e in reversed(await store.audit_events(TARGET))]
        assert events == ["key.adopted", "key.adoption_withdrawn", "key.promoted"]

    async def test_failures_count_up_and_clear(self, store: SqlStateStore) -> None:
        """Each failure adds one and sets the backoff; clearing resets both."""
        await store.record_failure(TARGET, backoff_until=START + timedelta(hours=1))
        state = await store.record_failure(TARGET, backoff_until=START + timedelta(hours=2))
        assert (state.consecutive_failures, state.backoff_until) == (2, START + timedelta(hours=2))
        state = await store.clear_failures(TARGET)
        assert (state.consecutive_failures, state.backoff_until) == (0, None)

    async def test_revocations_fall_due_with_the_clock(
        self, store: SqlStateStore, clock: FakeClock
    ) -> None:
        """A retiring key is due once its deadline passes, its deadline can be moved, and
        marking it revoked is idempotent and audited once."""
        await store.record_promotion(TARGET, managed_key())
        old = RetiringKey(TARGET, key_id(), "bbbbbbbbbbbb", START + timedelta(hours=1))
        await store.schedule_revocation(old)
        assert await store.revocations_due() == []
        later = RetiringKey(TARGET, old.key_id, "bbbbbbbbbbbb", START + timedelta(hours=3))
        state = await store.schedule_revocation(later)
        assert state.retiring == (later,)
        clock.advance(2 * 3600)
        assert await store.revocations_due() == []
        clock.advance(3600)
        assert await store.revocations_due() == [later]
        assert await store.revocation_done(TARGET, old.key_id) is True
        assert await store.revocation_done(TARGET, old.key_id) is False
        assert await store.revocations_due() == []
        assert [e.event for e in await store.audit_events(TARGET)].count("key.revoked") == 1

    async def test_the_current_key_cannot_be_scheduled_for_revocation(
        self, store: SqlStateStore
    ) -> None:
        """Scheduling the key the target serves is refused."""
        key = managed_key()
        await store.record_promotion(TARGET, key)
        with pytest.raises(ValueError, match="current key"):
            await store.schedule_revocation(RetiringKey(TARGET, key.key_id, None, START))

    # --- rotations ----------------------------------------------------------------------

    async def test_start_rotation_opens_one_with_a_fresh_uuid(self, store: SqlStateStore) -> None:
        """A started rotation is open, planned, stamped now, has a UUID id and creates its
        target."""
        rotation = await store.start_rotation(TARGET, emergency=True)
        assert uuid.UUID(rotation.rotation_id)
        assert (rotation.state, rotation.open, rotation.emergency) == ("planned", True, True)
        assert rotation.started_at == START
        assert rotation.short_id == rotation.rotation_id[:8]
        assert await store.get_rotation(rotation.rotation_id) == rotation
        assert await store.get_target(TARGET) is not None

    async def test_one_open_rotation_per_target(self, store: SqlStateStore) -> None:
        """A second rotation of a target is refused while one is open, naming it; other targets
        are independent; once finished, the next may start."""
        first = await store.start_rotation(TARGET)
        with pytest.raises(ConflictError, match=first.rotation_id):
            await store.start_rotation(TARGET)
        await store.start_rotation("other-target")
        await store.finish_rotation(first.rotation_id, state="rolled_back", outcome="rolled_back")
        second = await store.start_rotation(TARGET)
        assert [r.rotation_id for r in await store.open_rotations(TARGET)] == [second.rotation_id]

    async def test_starting_the_same_rotation_id_again_is_idempotent(
        self, store: SqlStateStore
    ) -> None:
        """Retrying a start with the same id returns the stored rotation; the id cannot be
        reused for another target."""
        rid = str(uuid.uuid4())
        first = await store.start_rotation(TARGET, rotation_id=rid, old_key_ids=["k1"])
        assert await store.start_rotation(TARGET, rotation_id=rid) == first
        with pytest.raises(ConflictError, match="belongs to target"):
            await store.start_rotation("other-target", rotation_id=rid)
        assert len(await store.audit_events()) == 1

    async def test_the_database_itself_forbids_two_open_rotations(
        self, store: SqlStateStore, raw: Engine
    ) -> None:
        """Even a writer bypassing the store cannot add a second open rotation for a target."""
        await store.start_rotation(TARGET)
        row = {
            "rotation_id": str(uuid.uuid4()),
            "target": TARGET,
            "state": "planned",
            "started_at": START,
            "emergency": False,
            "old_key_ids": [],
        }
        with pytest.raises(IntegrityError), raw.begin() as conn:
            conn.execute(insert(RotationRow).values(row))
        with raw.begin() as conn:
            conn.execute(insert(RotationRow).values({**row, "finished_at": START}))

    async def test_concurrent_writers_cannot_both_start_a_rotation(
        self, make_store: Callable[[], SqlStateStore], store: SqlStateStore
    ) -> None:
        """Of several connections starting a rotation of one target at the same instant,
        exactly one succeeds and the others get ConflictError."""
        writers = [make_store() for _ in range(6)]
        results = await asyncio.to_thread(
            run_concurrently, writers, lambda s: s.start_rotation(TARGET)
        )
        started = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, ConflictError)]
        assert (len(started), len(refused)) == (1, 5), results
        assert await store.open_rotations(TARGET) == started

    async def test_update_rotation_sets_only_the_given_fields(self, store: SqlStateStore) -> None:
        """Fields passed are set, fields left None keep their value, unknown ids raise
        LookupError."""
        rotation = await store.start_rotation(TARGET, new_key_name="rotator-prod-1")
        new_id = key_id()
        updated = await store.update_rotation(
            rotation.rotation_id, state="created", new_key_id=new_id, old_key_ids=["a", "b"]
        )
        assert (updated.state, updated.new_key_id, updated.new_key_name) == (
            "created",
            new_id,
            "rotator-prod-1",
        )
        assert updated.old_key_ids == ("a", "b")
        updated = await store.update_rotation(rotation.rotation_id, new_key_fingerprint="f" * 12)
        assert (updated.state, updated.new_key_fingerprint) == ("created", "f" * 12)
        with pytest.raises(LookupError):
            await store.update_rotation(str(uuid.uuid4()), state="created")

    async def test_finish_rotation_closes_it_once(
        self, store: SqlStateStore, clock: FakeClock
    ) -> None:
        """Finishing needs a terminal state, stamps finished_at, is idempotent for the same
        verdict and a conflict for a different one."""
        rotation = await store.start_rotation(TARGET)
        with pytest.raises(ValueError, match="not terminal"):
            await store.finish_rotation(rotation.rotation_id, state="promoted", outcome="x")
        clock.advance(30)
        done = await store.finish_rotation(
            rotation.rotation_id, state="stuck", outcome="stuck", error="vault down"
        )
        assert (done.open, done.finished_at, done.error) == (False, clock.now(), "vault down")
        again = await store.finish_rotation(rotation.rotation_id, state="stuck", outcome="stuck")
        assert again == done
        with pytest.raises(ConflictError, match="already finished"):
            await store.finish_rotation(rotation.rotation_id, state="done", outcome="rotated")
        assert await store.open_rotations() == []
        assert "stuck" in TERMINAL_STATES

    async def test_list_rotations_is_newest_first(
        self, store: SqlStateStore, clock: FakeClock
    ) -> None:
        """Rotations are listed newest first, per target, up to the limit."""
        ids = []
        for _ in range(3):
            rotation = await store.start_rotation(TARGET)
            await store.finish_rotation(rotation.rotation_id, state="done", outcome="rotated")
            ids.append(rotation.rotation_id)
            clock.advance(60)
        await store.start_rotation("other-target")
        assert [r.rotation_id for r in await store.list_rotations(TARGET)] == ids[::-1]
        assert [r.rotation_id for r in await store.list_rotations(TARGET, limit=2)] == ids[:0:-1]
        assert len(await store.list_rotations()) == 4

    # --- journal ------------------------------------------------------------------------

    async def test_journal_keeps_steps_in_order_with_their_facts(
        self, store: SqlStateStore, clock: FakeClock
    ) -> None:
        """Steps come back in the order journaled, numbered from 1, stamped, with their facts,
        and a step's state is set on the rotation in the same write."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        steps = ["planned", "created", "verified", "staged", "readback_ok", "promoted"]
        for n, step in enumerate(steps):
            clock.advance(1)
            await store.append_step(rid, step, {"n": n, "ids": ["a", "b"]}, state=step)
        journal = await store.journal(rid)
        assert [(e.seq, e.step, e.facts["n"]) for e in journal] == [
            (i + 1, s, i) for i, s in enumerate(steps)
        ]
        assert [e.at for e in journal] == [START + timedelta(seconds=i + 1) for i in range(6)]
        assert (await store.get_rotation(rid)).state == "promoted"  # type: ignore[union-attr]
        assert await store.journal(str(uuid.uuid4())) == []

    async def test_target_lock_is_exclusive_between_holders_and_released(
        self, store: SqlStateStore, make_store: Callable[[], SqlStateStore]
    ) -> None:
        """One holder at a time per target (another store, as another process, gets None);
        other targets are independent; released, it can be taken again."""
        other = make_store()
        first = await store.try_lock_target(TARGET)
        assert first is not None
        assert await other.try_lock_target(TARGET) is None
        independent = await other.try_lock_target("another-target")
        assert independent is not None
        await other.unlock_target(independent)
        await store.unlock_target(first)
        await store.unlock_target(first)  # idempotent
        again = await other.try_lock_target(TARGET)
        assert again is not None
        await other.unlock_target(again)

    async def test_a_new_step_for_a_finished_rotation_is_refused(
        self, store: SqlStateStore
    ) -> None:
        """A late writer cannot add steps to (or move the state of) a finished rotation."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        await store.append_step(rid, "created", state="created")
        await store.finish_rotation(rid, state="rolled_back", outcome="rolled_back")
        with pytest.raises(ConflictError):
            await store.append_step(rid, "promoting", state="promoting")
        assert (await store.get_rotation(rid)).state == "rolled_back"  # type: ignore[union-attr]
        assert [e.step for e in await store.journal(rid)] == ["created"]

    async def test_append_step_is_idempotent(self, store: SqlStateStore) -> None:
        """Journaling a step again returns the first entry and changes neither the journal nor
        the rotation's state."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        first = await store.append_step(rid, "created", {"key_id": "k1"}, state="created")
        await store.append_step(rid, "verified", state="verified")
        again = await store.append_step(rid, "created", {"key_id": "k2"}, state="created")
        assert again == first
        assert [e.step for e in await store.journal(rid)] == ["created", "verified"]
        assert (await store.get_rotation(rid)).state == "verified"  # type: ignore[union-attr]

    async def test_append_step_to_an_unknown_rotation_fails(self, store: SqlStateStore) -> None:
        """A step for a rotation that does not exist raises LookupError."""
        with pytest.raises(LookupError):
            await store.append_step(str(uuid.uuid4()), "planned")

    async def test_concurrent_appends_keep_the_journal_consistent(
        self, make_store: Callable[[], SqlStateStore], store: SqlStateStore
    ) -> None:
        """Writers racing on one step journal it once; writers racing on distinct steps get
        consecutive numbers with no gap."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        writers = [make_store() for _ in range(5)]
        same = await asyncio.to_thread(
            run_concurrently, writers, lambda s: s.append_step(rid, "created", {"n": 1})
        )
        assert len({e.seq for e in same if not isinstance(e, Exception)}) == 1, same
        counter = iter(range(100))
        lock = threading.Lock()

        async def distinct(s: SqlStateStore) -> object:
            with lock:
                n = next(counter)
            return await s.append_step(rid, f"step_{n}")

        results = await asyncio.to_thread(run_concurrently, writers, distinct)
        assert not [r for r in results if isinstance(r, Exception)], results
        assert [e.seq for e in await store.journal(rid)] == list(range(1, 7))

    # --- audit --------------------------------------------------------------------------

    async def _audit_rows(self, store: SqlStateStore, count: int) -> None:
        for n in range(count):
            await store.append_audit(
                "test.event", target=TARGET, facts={"n": n, "fingerprint": "abcdefabcdef"}
            )

    async def test_audit_chain_verifies_when_intact(self, store: SqlStateStore) -> None:
        """An empty log and an appended one both verify; each row chains to the previous."""
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.rows, verdict.head_hash) == (True, 0, GENESIS_HASH)
        await self._audit_rows(store, 5)
        events = await store.audit_events()
        assert [e.seq for e in events] == [5, 4, 3, 2, 1]
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.rows, verdict.head_hash) == (True, 5, events[0].hash)
        assert verdict.first_bad_seq is None
        assert "ok: 5 rows" in verdict.line()
        assert await store.audit_events(TARGET, limit=2) == events[:2]

    async def test_audit_detects_an_altered_row(self, store: SqlStateStore, raw: Engine) -> None:
        """Changing one row's payload is reported at that row."""
        await self._audit_rows(store, 5)
        with raw.begin() as conn:
            conn.execute(update(AuditRow).where(AuditRow.seq == 3).values(facts={"n": 99}))
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.first_bad_seq) == (False, 3)
        assert "row 3 does not match its hash" in verdict.line()

    async def test_audit_detects_an_altered_column(self, store: SqlStateStore, raw: Engine) -> None:
        """Changing a row's target, not just its facts, is reported at that row."""
        await self._audit_rows(store, 3)
        with raw.begin() as conn:
            conn.execute(update(AuditRow).where(AuditRow.seq == 2).values(target="elsewhere"))
        assert (await store.verify_audit()).first_bad_seq == 2

    async def test_audit_detects_a_deleted_row(self, store: SqlStateStore, raw: Engine) -> None:
        """Deleting a row in the middle is reported as that row missing."""
        await self._audit_rows(store, 5)
        with raw.begin() as conn:
            conn.execute(delete(AuditRow).where(AuditRow.seq == 2))
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.first_bad_seq, verdict.problem) == (
            False,
            2,
            "row 2 is missing",
        )

    async def test_audit_detects_rows_cut_off_the_end(
        self, store: SqlStateStore, raw: Engine
    ) -> None:
        """Deleting the last rows is caught by the recorded head."""
        await self._audit_rows(store, 5)
        with raw.begin() as conn:
            conn.execute(delete(AuditRow).where(AuditRow.seq >= 4))
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.first_bad_seq) == (False, 4)
        assert "missing from the end" in (verdict.problem or "")

    async def test_audit_detects_reordered_rows(self, store: SqlStateStore, raw: Engine) -> None:
        """Swapping the positions of two rows is reported at the first of them."""
        await self._audit_rows(store, 5)
        with raw.begin() as conn:
            conn.execute(update(AuditRow).where(AuditRow.seq == 3).values(seq=-3))
            conn.execute(update(AuditRow).where(AuditRow.seq == 4).values(seq=3))
            conn.execute(update(AuditRow).where(AuditRow.seq == -3).values(seq=4))
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.first_bad_seq) == (False, 3)

    async def test_facts_round_trip_exactly_and_keep_the_chain_valid(
        self, store: SqlStateStore
    ) -> None:
        """Facts with awkward numbers and non-ASCII text come back equal, and the audit rows
        holding them still verify."""
        facts: dict[str, JsonValue] = {
            "big": 1e20,
            "small": 1e-7,
            "third": 1 / 3,
            "whole": 2.0,
            "large_int": 2**53 + 1,
            "text": 'clé ✓ "quoted" \\ back',
            "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
        }
        rid = (await store.start_rotation(TARGET)).rotation_id
        entry = await store.append_step(rid, "created", facts)
        event = await store.append_audit("odd.facts", facts=facts)
        assert entry.facts == facts
        assert event.facts == facts
        assert (await store.journal(rid))[0].facts == facts
        assert (await store.audit_events(limit=1))[0].facts == facts
        assert (await store.verify_audit()).ok

    async def test_keyed_rows_follow_unkeyed_ones_and_all_verify(
        self, make_store: Callable[..., SqlStateStore], store: SqlStateStore
    ) -> None:
        """Rows appended once audit.hmac_key is configured are chained with it and carry its
        id (never the key); the rows chained before keep verifying with plain SHA-256."""
        await self._audit_rows(store, 2)
        keyed = make_store(AUDIT_KEY)
        await self._audit_rows(keyed, 3)
        events = await keyed.audit_events()
        key_id = audit_chain.ChainKey(AUDIT_KEY).id
        assert [e.hmac_key_id for e in events] == [key_id] * 3 + [None] * 2
        verdict = await keyed.verify_audit()
        assert (verdict.ok, verdict.rows, verdict.keyed) == (True, 5, 3)
        assert verdict.line() == (
            f"audit log ok: 5 rows (3 keyed with HMAC key {key_id}, from row 3), "
            f"head {events[0].hash[:16]}"
        )
        assert AUDIT_KEY.reveal() not in repr(events) + repr(verdict) + key_id

    async def test_keyed_rows_rewritten_without_the_key_are_caught(
        self, make_store: Callable[..., SqlStateStore], raw: Engine
    ) -> None:
        """Someone who can write the database but lacks the key cannot edit a keyed row and
        re-chain with SHA-256, nor downgrade keyed rows to unkeyed ones: the first row they
        touched is reported (unkeyed, the same edit goes unnoticed)."""
        keyed = make_store(AUDIT_KEY)
        await keyed.migrate()
        await self._audit_rows(keyed, 5)
        rechain(raw, 4, facts={"n": 99, "fingerprint": "abcdefabcdef"})
        verdict = await keyed.verify_audit()
        assert (verdict.ok, verdict.first_bad_seq, verdict.unverifiable) == (False, 4, False)
        assert "row 4 does not match its hash" in verdict.line()
        rechain(raw, 4, hmac_key_id=None)
        verdict = await keyed.verify_audit()
        assert verdict.line() == (
            "audit log TAMPERED at row 4: row 4 is chained without the HMAC key after keyed "
            "rows: rewritten by someone who does not hold the key"
        )
        rechain(raw, 1, hmac_key_id=None)  # every row downgraded: only an anchor tells
        assert (await make_store().verify_audit()).ok
        assert "none keyed yet with HMAC key" in (await keyed.verify_audit()).line()

    async def test_a_missing_or_wrong_key_is_named_not_called_tampering(
        self, make_store: Callable[..., SqlStateStore], store: SqlStateStore
    ) -> None:
        """Verifying keyed rows without the key, or with another one, fails (not ok) saying
        so, and that the rows before the first keyed one verify."""
        await self._audit_rows(store, 2)
        await self._audit_rows(make_store(AUDIT_KEY), 2)
        key_id = audit_chain.ChainKey(AUDIT_KEY).id
        missing = await store.verify_audit()
        assert (missing.ok, missing.unverifiable, missing.first_bad_seq) == (False, True, 3)
        assert missing.line() == (
            f"audit log NOT VERIFIED from row 3: rows 3.. are chained with HMAC key {key_id} "
            "and no audit.hmac_key is configured: configure it to verify them (rows 1..2 verify)"
        )
        other = Secret("o" * 16 + secrets.token_hex(16))
        wrong = await make_store(other).verify_audit()
        assert (wrong.ok, wrong.unverifiable, wrong.first_bad_seq) == (False, True, 3)
        assert "the wrong key is configured" in wrong.line()
        assert audit_chain.ChainKey(other).id in wrong.line()

    async def test_a_published_head_catches_a_cut_tail_and_a_rewrite(
        self, store: SqlStateStore, raw: Engine
    ) -> None:
        """The head published earlier (row count and hash) must still be in the chain: rows
        appended since are fine; rows cut off with the recorded head moved to match, or a
        chain rewritten up to it, are caught."""
        await self._audit_rows(store, 5)
        published = await store.audit_head()
        assert (published.rows, published.head_hash) == (5, (await store.audit_events())[0].hash)
        anchor = AuditAnchor(count=published.rows, head=published.head_hash[:16])
        await self._audit_rows(store, 2)
        assert (await store.verify_audit(anchor)).ok
        assert (await store.verify_audit(AuditAnchor(head=published.head_hash))).ok
        with raw.begin() as conn:
            conn.execute(delete(AuditRow).where(AuditRow.seq >= 4))
        rechain(raw, 3)  # moves the recorded head back to row 3
        assert (await store.verify_audit()).ok
        cut = await store.verify_audit(AuditAnchor(count=5))
        assert cut.line() == (
            "audit log TAMPERED at row 4: rows 4..5 are missing from the end (the chain had 5 "
            "rows when its head was published): the tail was cut"
        )
        await self._audit_rows(store, 3)  # the tail grown back, rewritten
        rewritten = await store.verify_audit(anchor)
        assert (rewritten.ok, rewritten.first_bad_seq) == (False, 5)
        assert "row 5's hash does not start with" in rewritten.line()
        unplaced = await store.verify_audit(AuditAnchor(head=published.head_hash[:16]))
        assert unplaced.line() == (
            f"audit log TAMPERED: no row's hash starts with {published.head_hash[:16]}: "
            "the chain was rewritten"
        )

    async def test_concurrent_audit_appends_keep_one_chain(
        self, make_store: Callable[[], SqlStateStore], store: SqlStateStore
    ) -> None:
        """Writers appending at once produce consecutive rows and a chain that verifies."""
        writers = [make_store() for _ in range(4)]

        async def append_three(s: SqlStateStore) -> None:
            for n in range(3):
                await s.append_audit("race", facts={"n": n})

        results = await asyncio.to_thread(run_concurrently, writers, append_three)
        assert results == [None] * 4
        verdict = await store.verify_audit()
        assert (verdict.ok, verdict.rows) == (True, 12)

    # --- what may be stored -------------------------------------------------------------

    async def test_timestamps_are_aware_utc_and_naive_ones_are_refused(
        self, store: SqlStateStore
    ) -> None:
        """Times come back timezone-aware in UTC; a naive time is refused."""
        naive = datetime(2026, 3, 1, 12, 0)
        with pytest.raises(ValueError, match="timezone-aware"):
            await store.record_failure(TARGET, backoff_until=naive)
        rotation = await store.start_rotation(TARGET)
        assert rotation.started_at.utcoffset() == timedelta(0)
        assert (await store.journal(rotation.rotation_id)) == []

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("target", "A" * 32),
            ("key_id", "ghp" + "x" * 29),
            ("fingerprint", "Bearer abcdefghijkl"),
            ("facts", {"nested": [{"version": "Z" * 32}]}),
        ],
    )
    async def test_credential_shaped_identifiers_are_refused(
        self, store: SqlStateStore, field: str, value: Any
    ) -> None:
        """A value shaped like a key or token is refused wherever an identifier goes."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
            "target": lambda: store.start_rotation(value),
            "key_id": lambda: store.record_promotion(
                TARGET, ManagedKey(value, "a" * 12, None, None)
            ),
            "fingerprint": lambda: store.update_rotation(rid, new_key_fingerprint=value[:16]),
            "facts": lambda: store.append_step(rid, "x", value),
        }
        with pytest.raises(ValueError, match="looks like a credential"):
            await calls[field]()

    async def test_facts_must_be_json_safe(self, store: SqlStateStore) -> None:
        """Facts that are not JSON-safe (objects, NaN, non-string keys) are refused."""
        rid = (await store.start_rotation(TARGET)).rotation_id
        for bad in ({"when": START}, {"n": float("nan")}, {1: "x"}, {"s": {1, 2}}):
            with pytest.raises(TypeError):
                await store.append_step(rid, "x", bad)  # type: ignore[arg-type]
        assert await store.journal(rid) == []

    async def test_no_table_holds_a_plaintext_after_a_scripted_run(
        self, store: SqlStateStore, clock: FakeClock, raw: Engine
    ) -> None:
        """After a full rotation's calls with every smuggling attempt, no row of any table
        contains a plaintext key, while the fingerprints are there."""
        plaintexts = [key_shaped_secret(), odd_secret()]
        await scripted_run(store, clock, plaintexts)
        dump = table_dump(raw)
        for secret in plaintexts:
            assert secret.reveal() not in dump
        assert plaintexts[0].fingerprint in dump
        assert "***" in dump
        assert (await store.verify_audit()).ok
