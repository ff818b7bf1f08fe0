"""`rotator history --verify` as an operator runs it against a state database someone edited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import Engine, text

from rotator.secret import Secret
from rotator.state import SqlStateStore
from rotator.state.audit import ChainKey
from tests.state_fixtures import rechain
from tests.support.legacy_state.database import create_state_engine
from tests.unit.test_cli_errors import VALID, run_cli

T = TypeVar("T")


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def config(tmp_path: Path, state_url: str) -> Path:
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(VALID + f"state:\n  url: {state_url}\n")
    return cfg


@pytest.fixture
def five_rows(state_url: str) -> None:
    append_rows(state_url, None, 5)


@pytest.fixture
def raw(state_url: str) -> Iterator[Engine]:
    engine = create_state_engine(state_url)
    yield engine
    engine.dispose()


async def on_store(
    url: str, key: Secret | None, call: Callable[[SqlStateStore], Awaitable[T]]
) -> T:
    """``call`` on a migrated store of ``url`` (chaining with ``key``), closed afterwards."""
    store = SqlStateStore(url, audit_key=key)
    try:
        await store.migrate()
        return await call(store)
    finally:
        await store.close()


def append_rows(url: str, key: Secret | None, count: int) -> None:
    """``count`` audit rows appended to the store of ``url``, chained with ``key``."""

    async def append(store: SqlStateStore) -> None:
        for n in range(count):
            await store.append_audit("test.event", target="prod-backend", facts={"n": n})

    asyncio.run(on_store(url, key, append))


@pytest.mark.usefixtures("five_rows")
@pytest.mark.parametrize(
    ("column", "garbage", "problem"),
    [
        ("facts", "{not json", "its facts are not JSON"),
        ("facts", "[1, 2]", "its facts are not a JSON object"),
        ("at", "yesterday-ish", "its timestamp is not a time"),
    ],
)
@pytest.mark.parametrize("output", [(), ("--json",), ("--csv",)])
def test_verify_reports_an_unreadable_row_as_tampering(
    config: Path, raw: Engine, column: str, garbage: str, problem: str, output: tuple[str, ...]
) -> None:
    """A row whose facts are not a JSON object or whose timestamp is not a time (only SQLite
    can hold such values) is tampering like any other: `history --verify` names the row, in
    every output format, and exits 1; no internal error."""
    with raw.begin() as conn:
        conn.execute(text(f"UPDATE audit_log SET {column} = :v WHERE seq = 3"), {"v": garbage})
    code, out, err = run_cli("history", "--verify", *output, "--config", str(config))
    assert "internal error" not in out + err
    verdict = (err if output else out).strip().splitlines()[-1]
    assert verdict == f"audit log TAMPERED at row 3: row 3 cannot be read: {problem}"
    assert code == 1


@pytest.mark.usefixtures("five_rows")
def test_listing_without_verify_names_the_unreadable_row(config: Path, raw: Engine) -> None:
    """`history` without --verify, meeting an unreadable row, fails in one line naming it and
    pointing at --verify (exit 1), instead of an internal error."""
    with raw.begin() as conn:
        conn.execute(text("UPDATE audit_log SET facts = '{oops' WHERE seq = 4"))
    code, out, err = run_cli("history", "--config", str(config))
    assert (code, out) == (1, "")
    assert err.strip() == (
        "rotator: audit row 4 cannot be read: its facts are not JSON"
        " (the audit log was altered: see rotator history --verify)"
    )


@pytest.mark.usefixtures("five_rows")
def test_a_published_head_is_checked_and_a_cut_tail_caught(
    config: Path, raw: Engine, state_url: str
) -> None:
    """--expect-count and --expect-head (either implies --verify) pass while the chain holds
    the published head; once the last rows are cut and the recorded head moved back to match
    (which plain --verify cannot see), they report where (exit 1); a malformed head is bad
    usage (exit 2)."""
    head = asyncio.run(on_store(state_url, None, SqlStateStore.audit_head))
    args = ("--expect-count", str(head.rows), "--expect-head", head.head_hash[:16].upper())
    code, out, _ = run_cli("history", *args, "--config", str(config))
    assert (code, out.strip().splitlines()[-1]) == (
        0,
        f"audit log ok: 5 rows, head {head.head_hash[:16]}",
    )
    with raw.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 4"))
    rechain(raw, 3)
    assert run_cli("history", "--verify", "--config", str(config))[0] == 0
    code, _, err = run_cli("history", "--json", *args[:2], "--config", str(config))
    assert code == 1
    assert err.strip() == (
        "audit log TAMPERED at row 4: rows 4..5 are missing from the end (the chain had 5 rows"
        " when its head was published): the tail was cut"
    )
    code, _, err = run_cli("history", *args[2:], "--config", str(config))
    assert code == 1
    assert "the chain was rewritten" in err + _
    code, _, err = run_cli("history", "--expect-head", "xyz", "--config", str(config))
    assert code == 2
    assert "--expect-head" in err


def test_keyed_rows_need_the_key_file_and_never_show_it(
    tmp_path: Path, config: Path, state_url: str
) -> None:
    """Rows chained with audit.hmac_key verify when audit.hmac_key_file holds that key, and
    are NOT VERIFIED without it (exit 1); neither output carries the key."""
    key = "0f" * 32
    append_rows(state_url, Secret(key), 3)
    key_id = ChainKey(Secret(key)).id
    code, out, err = run_cli("history", "--verify", "--config", str(config))
    assert code == 1
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith(
            f"audit log NOT VERIFIED from row 1: rows 1.. are chained with HMAC key {key_id} and no"
            " audit.hmac_key is configured"
        )
    )
    key_file = tmp_path / "audit-hmac-key"
    key_file.write_text(key + "\n")
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(config.read_text() + f"audit:\n  hmac_key_file: {key_file}\n")
    code, out2, err2 = run_cli("history", "--verify", "--json", "--config", str(keyed))
    assert code == 0
    assert f"(3 keyed with HMAC key {key_id}, from row 1)" in err2
    assert key not in out + err + out2 + err2
