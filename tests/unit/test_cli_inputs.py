"""Inputs that used to hang or crash the CLI (issue 12): each is one line, exit 2, no change."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.state import SqlStateStore
from tests.unit.test_cli_errors import VALID, run_cli

TARGET_LINE = "  - name: prod-backend\n"


SECOND_TARGET = """
  - name: batch
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50089
    destinations:
      - {store: vault-main, path: mistral/batch, field: api_key}
"""


def _config(tmp_path: Path, text: str = VALID, *, state: Path | str | None = None) -> Path:
    """The config file; its state database is ``state``, a path or a URL (default: state.db in
    tmp_path)."""
    state = state or tmp_path / "state.db"
    url = state if isinstance(state, str) else f"sqlite:///{state}"
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(f"{text}\nstate:\n  url: {url}\n")
    return cfg


def _make_state(path: Path) -> None:
    """A migrated, empty state database, as a first `rotator rotate` leaves it."""

    async def go() -> None:
        store = SqlStateStore(f"sqlite:///{path}")
        await store.migrate()
        await store.close()

    asyncio.run(go())


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


@pytest.mark.parametrize("command", ["history", "status"])
def test_unknown_target_is_refused_naming_the_known(tmp_path: Path, command: str) -> None:
    """`history nope` and `status nope` exit 2 naming the known targets, like `rotate nope`."""
    cfg = _config(tmp_path, VALID + SECOND_TARGET)
    _make_state(tmp_path / "state.db")
    code, out, err = run_cli(command, "nope", "--config", str(cfg))
    assert (code, out) == (2, "")
    unknown = "unknown target 'nope' (known: prod-backend, batch)"
    see = f"(see 'rotator {command} --help')"
    assert err.splitlines() == [f"rotator: Invalid value for TARGET: {unknown} {see}"]


def test_status_shows_only_the_targets_named(tmp_path: Path) -> None:
    """`status batch` lists that target alone; no name lists them all."""
    cfg = _config(tmp_path, VALID + SECOND_TARGET)
    _make_state(tmp_path / "state.db")
    code, out, err = run_cli("status", "batch", "--json", "--config", str(cfg))
    assert code == 0, err
    assert [row["target"] for row in json.loads(out)] == ["batch"]
    code, out, err = run_cli("status", "--json", "--config", str(cfg))
    assert [row["target"] for row in json.loads(out)] == ["prod-backend", "batch"]


@pytest.mark.parametrize("url", ["postgres://u:pw@127.0.0.1/db", "mysql://127.0.0.1/db"])
@pytest.mark.parametrize("command", [["check", "--config-only"], ["status"], ["rotate", "--all"]])
def test_unsupported_state_url_is_one_check_naming_the_file(
    tmp_path: Path, url: str, command: list[str]
) -> None:
    """`check --config-only` refuses what every other command refuses, in the same words."""
    cfg = _config(tmp_path, state=url)
    code, out, err = run_cli(*command, "--config", str(cfg))
    assert (code, out) == (2, "")
    backend = url.partition(":")[0]
    use = "use sqlite:////path/state.db or postgresql://user@host/db"
    assert err.splitlines() == [f"{cfg}: state.url: unsupported database {backend!r}: {use}"]


def test_missing_postgres_driver_names_the_extra(tmp_path: Path) -> None:
    """Without psycopg (blocked in a child process), a PostgreSQL URL is one line naming the
    extra to install, not a ModuleNotFoundError and its traceback."""
    cfg = _config(tmp_path, state="postgresql://u:pw@127.0.0.1:1/db")
    blocked = (
        "import sys; sys.modules['psycopg'] = None;"
        " from rotator.cli import main; main(sys.argv[1:])"
    )
    for command in (["check", "--config-only"], ["status"]):
        done = subprocess.run(
            [sys.executable, "-c", blocked, *command, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        install = "pip install 'rotator[postgres]'"
        assert done.stderr.splitlines() == [
            f"{cfg}: state.url: the PostgreSQL driver (psycopg) is not installed: {install}"
        ]


@pytest.mark.parametrize(
    "command", [["status"], ["history"], ["report"], ["revoke-due"], ["status", "--json"]]
)
def test_read_only_commands_do_not_create_state(tmp_path: Path, command: list[str]) -> None:
    """No state database yet: the read-only commands say so (exit 2) and create nothing."""
    state = tmp_path / "var" / "lib" / "state.db"
    cfg = _config(tmp_path, state=state)
    code, out, err = run_cli(*command, "--config", str(cfg))
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"{cfg}: state.url: no state at {state} (has rotator run yet?)"]
    assert not state.parent.parent.exists()


def test_state_file_that_is_not_a_database(tmp_path: Path) -> None:
    """A corrupt or foreign state file: one line naming it, exit 2, the file left as it was."""
    state = tmp_path / "state.db"
    garbage = bytes(range(256)) * 20
    state.write_bytes(garbage)
    cfg = _config(tmp_path, state=state)
    for command in ("status", "recover"):
        code, out, err = run_cli(command, "--config", str(cfg))
        assert (code, out) == (2, "")
        assert err.splitlines() == [
            f"{cfg}: state.url: {state} is not a rotator state database (file is not a database)"
        ]
    assert state.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rotator.yaml", "state.db"]


def test_state_that_cannot_be_opened_is_an_operation_failure(tmp_path: Path) -> None:
    """An I/O problem (here: a folder where the file should be) is exit 1, one line."""
    state = tmp_path / "state.db"
    state.mkdir()
    cfg = _config(tmp_path, state=state)
    code, out, err = run_cli("status", "--config", str(cfg))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"rotator: state open: sqlite:///{state}: unable to open database file"
    ]


def _with_key_file(tmp_path: Path, key_file: Path | str) -> Path:
    """The config with the admin key read from ``key_file``."""
    text = VALID.replace("admin_key: test-admin-key", f"admin_key_file: {key_file}")
    return _config(tmp_path, text)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (os.mkfifo, "a FIFO"),
        (lambda p: p.mkdir(), "a folder"),
        (None, "a character device"),
    ],
    ids=["fifo", "folder", "dev-zero"],
)
def test_secret_file_must_be_a_regular_file(
    tmp_path: Path, make: Callable[[Path], None] | None, kind: str
) -> None:
    """A FIFO (which used to hang `check`), a folder or /dev/zero: one line, exit 2."""
    key_file: Path = tmp_path / "admin-key"
    if make is None:
        key_file = Path("/dev/zero")
    else:
        make(key_file)
    cfg = _with_key_file(tmp_path, key_file)
    code, out, err = run_cli("check", "--config-only", "--config", str(cfg))
    assert (code, out) == (2, "")
    named = "the file named by admin_key_file"
    assert err.splitlines() == [
        f"{cfg}: mistral.admin_key_file: {named} is {kind}, not a regular file"
    ]


def test_secret_file_open_to_others_warns_once_or_is_refused(tmp_path: Path) -> None:
    """Mode 0644: accepted with one warning naming the field and the mode; refused (exit 2)
    with --strict-permissions. 0600 passes silently either way."""
    key_file = tmp_path / "admin-key"
    key_file.write_text("sk-admin-key-in-a-file\n")
    key_file.chmod(0o644)
    cfg = _with_key_file(tmp_path, key_file)
    problem = (
        "the file named by admin_key_file is open to other users (mode 0644); make it 0600,"
        " or 0640 with rotator's own group"
    )
    code, out, err = run_cli("--log-format", "json", "rotate", "nope", "--config", str(cfg))
    assert code == 2  # the config is read once, before the unknown target is refused
    warnings = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [(w["event"], w["field"], w["problem"]) for w in warnings] == [
        ("secret_file_permissions", "mistral.admin_key_file", problem)
    ]
    assert "sk-admin-key-in-a-file" not in err

    argv = ["--strict-permissions", "check", "--config-only", "--config", str(cfg)]
    code, out, err = run_cli(*argv)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"{cfg}: mistral.admin_key_file: {problem} (--strict-permissions)"]

    key_file.chmod(0o600)
    code, out, err = run_cli(*argv)
    assert (code, err) == (0, "")
