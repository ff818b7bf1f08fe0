"""`rotator history --verify` as an operator runs it against a state database someone edited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from rotator.state import SqlStateStore
from rotator.state.database import create_state_engine
from tests.unit.test_cli_errors import VALID, run_cli


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def config(tmp_path: Path, state_url: str) -> Path:
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(VALID + f"state:\n  url: {state_url}\n")
    return cfg


@pytest.fixture
async def five_rows(state_url: str) -> None:
    store = SqlStateStore(state_url)
    await store.migrate()
    for n in range(5):
        await store.append_audit("test.event", target="prod-backend", facts={"n": n})
    await store.close()


@pytest.fixture
def raw(state_url: str) -> Iterator[Engine]:
    engine = create_state_engine(state_url)
    yield engine
    engine.dispose()


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
