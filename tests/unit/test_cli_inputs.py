"""Inputs that used to hang or crash the CLI (issue 12): each is one line, exit 2, no change."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_cli_errors import VALID, run_cli

TARGET_LINE = "  - name: prod-backend\n"


def _config(tmp_path: Path, text: str = VALID) -> Path:
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(text)
    return cfg


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("max_age: 99999999999999999999999999d", "targets[0].max_age"),
        ("max_age: 1000000000000000000000000000000000000000s", "targets[0].max_age"),
        ("schedule: every 99999999999d", "targets[0].schedule"),
    ],
)
def test_absurd_duration_names_field_and_range(tmp_path: Path, setting: str, field: str) -> None:
    """A duration past timedelta's range is refused like any over a century, not a crash."""
    cfg = _config(tmp_path, VALID.replace(TARGET_LINE, f"{TARGET_LINE}    {setting}\n"))
    code, out, err = run_cli("check", "--config-only", "--config", str(cfg))
    assert code == 2, out + err
    every = "every: " if "every" in setting else ""
    assert err.strip().splitlines() == [
        f"{cfg}: {field}: {every}must be at most 100 years (36500d)"
    ]


def test_bare_rotator_prints_usage_to_stderr() -> None:
    """No command: the usage line and where help is, on stderr (not 38 lines on stdout)."""
    code, out, err = run_cli()
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "Usage: rotator [OPTIONS] COMMAND [ARGS]...",
        "Try 'rotator --help' for help.",
    ]


def test_counts_are_singular_for_one(tmp_path: Path) -> None:
    """`check` says "1 target", not "1 targets"."""
    code, out, _ = run_cli("check", "--config-only", "--config", str(_config(tmp_path)))
    assert code == 0
    assert out.splitlines()[0].endswith(": 1 target, 2 stores")
    assert out.splitlines()[-1] == "1 passed, 0 failed"
