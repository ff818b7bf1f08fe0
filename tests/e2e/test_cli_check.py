"""`rotator check` and the operator commands as a user runs them: real process, real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

ROTATOR = str(Path(sys.executable).with_name("rotator"))


def run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, with rotator's AWS identity and nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
    env.update(stack.aws_env())
    return subprocess.run(
        [ROTATOR, "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_check_passes_against_working_backends(
    stack: Stack, state_url: str, tmp_path: Path
) -> None:
    """Every check passes against the stand-in, OpenBao and moto: exit 0, a line per check."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    cfg = stack.write_config(tmp_path / "rotator.yaml", state_url=state_url)
    done = run(stack, "check", "--config", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok    config")
    assert any("mistral admin API" in line and line.startswith("ok") for line in lines)
    assert any(f"target {spec.name}" in line and "workspace" in line for line in lines)
    assert any(spec.vault_path in line and "write" in line for line in lines)
    assert lines[-1].endswith(" 0 failed")


def test_check_fails_on_wrong_admin_key(stack: Stack, state_url: str, tmp_path: Path) -> None:
    """A rejected admin key fails the Admin API check (exit 1) and says so in one line."""
    stack.add_target(("vault",))
    data = stack.config_dict(state_url=state_url)
    data["mistral"]["admin_key"] = "not-the-admin-key"
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(yaml.safe_dump(data))
    done = run(stack, "check", "--config", str(cfg))
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert any("mistral admin API" in line and "401" in line for line in failed), done.stdout
    assert "not-the-admin-key" not in done.stdout + done.stderr


def test_check_fails_on_archived_workspace(stack: Stack, state_url: str, tmp_path: Path) -> None:
    """A target whose workspace is archived fails its check with the workspace named."""
    spec = stack.add_target(("vault",))
    stack.standin.control.archive_workspace(spec.workspace_id)
    cfg = stack.write_config(tmp_path / "rotator.yaml", state_url=state_url)
    done = run(stack, "check", "--config", str(cfg))
    assert done.returncode == 1
    assert f"workspace {spec.workspace_id} (Default Workspace): archived" in done.stdout


def test_broken_config_is_one_line_exit_2(stack: Stack, state_url: str, tmp_path: Path) -> None:
    """A config naming an unknown store: exit 2, one line with file and field, nothing else."""
    stack.add_target(("vault", "aws"))
    data = stack.config_dict(state_url=state_url)
    data["targets"][0]["destinations"][0]["store"] = "vaultx"
    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(yaml.safe_dump(data))  # sorts keys: stores are listed aws, vault
    done = run(stack, "check", "--config", str(cfg))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"{cfg}: targets[0].destinations[0].store: unknown store 'vaultx' (known: aws, vault)"
    )


def test_rotate_all_json_then_status_and_history(
    stack: Stack, state_url: str, tmp_path: Path, checker: object
) -> None:
    """rotate --all --json prints one object per target; status and history reflect it."""
    specs = [stack.add_target(b) for b in (("vault",), ("aws",), ("vault", "aws"))]
    for spec in specs:
        stack.seed(spec)
    cfg = stack.write_config(tmp_path / "rotator.yaml", state_url=state_url)
    done = run(stack, "rotate", "--all", "--json", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["target"] for r in results] == [s.name for s in specs]
    for r in results:
        assert r["outcome"] == "promoted"
        assert r["new_key_id"]
        assert r["revoke_due_at"]
        assert set(r) >= {"rotation_id", "revoked_key_ids", "error"}
    status = json.loads(run(stack, "status", "--json", "--config", str(cfg)).stdout)
    assert {s["target"]: s["state"] for s in status} == {s.name: "draining" for s in specs}
    assert all(s["compliant"] for s in status)
    history = run(stack, "history", "--verify", "--config", str(cfg))
    assert history.returncode == 0
    assert "key.promoted" in history.stdout
    assert history.stdout.strip().splitlines()[-1].startswith("audit log ok")


def test_unknown_target_is_usage_error(stack: Stack, state_url: str, tmp_path: Path) -> None:
    """Rotating a target that is not configured is bad usage: exit 2 and the known names."""
    spec = stack.add_target(("vault",))
    cfg = stack.write_config(tmp_path / "rotator.yaml", state_url=state_url)
    done = run(stack, "rotate", "nope", "--config", str(cfg))
    assert done.returncode == 2
    assert f"unknown target 'nope' (known: {spec.name})" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_rotation_failure_reaches_the_webhook(
    stack: Stack, state_url: str, tmp_path: Path
) -> None:
    """A `rotator rotate` that rolls back notifies the configured webhook before it exits."""
    import http.server
    import threading

    received: list[dict[str, object]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec = stack.add_target(("vault",))
        stack.seed(spec)
        data = stack.config_dict(state_url=state_url, policy={"activation_timeout": "1s"})
        port = server.server_address[1]
        data["notifications"] = {"webhooks": [{"url": f"http://127.0.0.1:{port}/hook"}]}
        cfg = tmp_path / "rotator.yaml"
        cfg.write_text(yaml.safe_dump(data))
        stack.standin.control.set_billing_active(False)
        try:
            done = run(stack, "rotate", spec.name, "--json", "--config", str(cfg))
        finally:
            stack.standin.control.set_billing_active(True)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1
    assert json.loads(done.stdout)[0]["outcome"] == "rolled_back"
    assert [(r["event"], r["target"]) for r in received] == [("rotation_failed", spec.name)]
