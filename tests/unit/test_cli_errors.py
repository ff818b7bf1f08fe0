"""The CLI's error contract: bad input → one line naming file and field, exit 2, no traceback."""

from __future__ import annotations

import contextlib
import io
import socket
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.cli import main

VALID = """
mistral:
  admin_key: test-admin-key
  user_id: 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce
stores:
  vault-main: {type: vault, url: "http://127.0.0.1:1", auth: {method: token, token: t}}
  aws-main: {type: aws_secrets_manager, region: eu-west-1}
targets:
  - name: prod-backend
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50088
    destinations:
      - {store: vault-main, path: mistral/prod-backend, field: api_key}
      - {store: aws-main, secret_id: mistral/prod-backend}
"""


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run the console entry point in-process; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
    return code, out.getvalue(), err.getvalue()


def test_valid_config_passes_config_only_check(tmp_path: Path) -> None:
    """A valid file passes `check --config-only` with exit 0 and says what it loaded."""
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(VALID)
    code, out, _ = run_cli("check", "--config-only", "--config", str(cfg))
    assert code == 0, out
    assert "1 target, 2 stores" in out


@pytest.mark.parametrize("before", [True, False])
def test_config_option_before_or_after_the_command(tmp_path: Path, before: bool) -> None:
    """--config is accepted before the command and after it."""
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(VALID)
    argv = (
        ["--config", str(cfg), "check", "--config-only"]
        if before
        else ["check", "--config-only", "--config", str(cfg)]
    )
    assert run_cli(*argv)[0] == 0


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ROTATOR_CONFIG names the file when --config is absent."""
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(VALID)
    monkeypatch.setenv("ROTATOR_CONFIG", str(cfg))
    assert run_cli("check", "--config-only")[0] == 0


def test_unknown_store_is_one_line_with_file_and_field(tmp_path: Path) -> None:
    """The issue's example: a destination naming an unknown store."""
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(VALID.replace("store: vault-main", "store: vaultx"))
    code, out, err = run_cli("check", "--config", str(cfg))
    assert code == 2
    assert out == ""
    assert err.strip() == (
        f"{cfg}: targets[0].destinations[0].store: unknown store 'vaultx' "
        "(known: vault-main, aws-main)"
    )


def test_missing_file_is_exit_2(tmp_path: Path) -> None:
    """A missing configuration file is a configuration error, not a crash."""
    code, _, err = run_cli("check", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "nope.yaml" in err
    assert "Traceback" not in err


def test_no_config_at_all_is_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --config and ROTATOR_CONFIG the command says so in one line."""
    monkeypatch.delenv("ROTATOR_CONFIG", raising=False)
    code, _, err = run_cli("check")
    assert code == 2
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [["no-such-command"], ["check", "--no-such-flag"], ["--log-level", "LOUD", "check"]],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str]) -> None:
    """Unknown commands, flags and bad option values exit 2 with one line and no traceback."""
    code, _, err = run_cli(*argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_secret_in_bad_config_never_printed(tmp_path: Path) -> None:
    """An error about a field whose value is a secret never echoes the secret."""
    secret = "Zq8RkTn3VbL0pW6yHs2MdF9cXe4GaJ7u"
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(VALID.replace("admin_key: test-admin-key", f"admin_key: [{secret}]"))
    code, out, err = run_cli("check", "--config", str(cfg))
    assert code == 2
    assert secret not in out + err


_yaml_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        ["1h", "every 5m", "0 3 * * 1", "vault", "${UNSET_VAR}", "aws_secrets_manager"]
    ),
)
_yaml_key = st.one_of(
    st.sampled_from(
        [
            "mistral",
            "stores",
            "targets",
            "defaults",
            "engine",
            "server",
            "state",
            "type",
            "admin_key",
            "name",
            "workspace_id",
            "destinations",
            "store",
            "path",
            "field",
            "auth",
        ]
    ),
    st.text(max_size=8),
)
_yaml_doc = st.recursive(
    _yaml_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_yaml_key, children, max_size=5)
    ),
    max_leaves=25,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=st.one_of(_yaml_doc.map(yaml.safe_dump), st.text(max_size=200)))
def test_random_documents_never_crash_the_cli(tmp_path: Path, doc: str) -> None:
    """Any random YAML (or non-YAML) document: exit 2 with one line and no traceback.

    (A random document that happens to be a valid configuration may pass with exit 0.)
    """
    cfg = tmp_path / "fuzz.yaml"
    cfg.write_text(doc)
    code, out, err = run_cli("check", "--config-only", "--config", str(cfg))
    assert "Traceback" not in out + err
    if code == 0:
        return
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(str(cfg))
    assert "Traceback" not in err


def test_two_targets_with_one_key_prefix_in_a_workspace_are_refused(tmp_path: Path) -> None:
    """Two targets whose keys would carry the same name prefix in one workspace: exit 2."""
    doubled = (
        VALID
        + """
  - name: prod-frontend
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50088
    key_name_prefix: rotator-prod-backend
    destinations:
      - {store: vault-main, path: mistral/prod-frontend, field: api_key}
"""
    )
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(doubled)
    code, _, err = run_cli("check", "--config-only", "--config", str(cfg))
    assert code == 2
    assert err.strip() == (
        f"{cfg}: targets[1].key_name_prefix: key_name_prefix 'rotator-prod-backend' is also used"
        " in this workspace by targets[0]; each target's keys must be told apart by their names"
    )


def test_standin_on_a_port_in_use_is_one_line_exit_1() -> None:
    """`rotator dev standin` on a port another process listens on fails in one line, exit 1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = run_cli("dev", "standin", "--port", str(port))
    assert (code, out) == (1, "")
    assert err == f"rotator: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_standin_without_the_dev_kit_is_one_line_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where rotator_dev is not installed (the wheel, the image), `rotator dev standin` says so
    in one line and exits 1, no traceback."""
    for name in [m for m in sys.modules if m == "rotator_dev" or m.startswith("rotator_dev.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rotator_dev", None)  # None: the import fails, as if absent
    code, out, err = run_cli("dev", "standin", "--port", "0")
    assert (code, out) == (1, "")
    assert err == (
        "rotator: the dev kit (rotator_dev) is not installed here; it comes with a checkout"
        " of the repository, not with the wheel or the image\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # Rejected by the resolver without a DNS query: no name is made of digits and dots only.
        (
            ["--host", "256.256.256.256"],
            "Invalid value for '--host': cannot resolve '256.256.256.256'",
        ),
        (
            ["--host", "192.0.2.1"],
            "Invalid value for '--host': '192.0.2.1' is not an address of this machine",
        ),
        (["--admin-key", ""], "Invalid value for '--admin-key': must not be empty"),
    ],
    ids=["unresolvable host", "foreign address", "empty admin key"],
)
def test_standin_bad_usage_is_one_line_exit_2(argv: list[str], expected: str) -> None:
    """An unresolvable --host or an empty --admin-key is bad usage: one line, exit 2."""
    code, out, err = run_cli("dev", "standin", "--port", "0", *argv)
    assert (code, out) == (2, "")
    assert err == f"rotator: {expected} (see 'rotator dev standin --help')\n"
