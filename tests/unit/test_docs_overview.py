"""docs/overview.md states what the engine relies on: a table of exactly the journal steps
:mod:`rotator.engine.steps` defines, and the invariants I1-I6 the tests check."""

from __future__ import annotations

import re
from pathlib import Path

from rotator.engine.steps import DestStep, Step
from tests.unit.test_docs_cli_reference import first_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "overview.md"


def code_steps() -> set[str]:
    """Every journal step name the code writes: the rotation's steps, and per-destination ones
    as ``<step>:<tag>``."""
    return {str(step) for step in Step} | {f"{step}:<tag>" for step in DestStep}


def test_the_journal_table_lists_exactly_the_codes_steps() -> None:
    """Each step of rotator/engine/steps.py has a row saying when it is written and what it
    records, and no other step has one."""
    table = first_table(DOC.read_text(encoding="utf-8"), "journal step")
    assert set(table) == code_steps()
    assert {step: cells for step, cells in table.items() if len(cells) != 2 or not all(cells)} == {}


def test_the_invariants_are_stated() -> None:
    """The invariants table has exactly I1 to I6, in order, each with its statement."""
    invariant = re.compile(r"^\| \*\*(I\d)\*\* \| (.*) \|$", re.MULTILINE)
    rows = invariant.findall(DOC.read_text(encoding="utf-8"))
    assert [name for name, _ in rows] == [f"I{n}" for n in range(1, 7)]
    assert all(statement.strip() for _, statement in rows)
