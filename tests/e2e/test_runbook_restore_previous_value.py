"""docs/runbooks/restore-previous-value.md, followed on a real stand-in, OpenBao and moto.

The operator's steps are the runbook's: ``bao kv rollback`` to the previous KV v2 version, and
AWSCURRENT moved back onto the AWSPREVIOUS version (``UpdateSecretVersionStage``, the call behind
``aws secretsmanager update-secret-version-stage``, made with boto3 as the stack's admin). rotator
runs as the installed console script, as the runbook shows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.invariants import InvariantChecker
from tests.support.servers import ROOT_TOKEN, tool
from tests.support.stack import FIELD, OTHER_FIELDS, Stack, TargetSpec

pytestmark = pytest.mark.e2e

ROTATOR = str(Path(sys.executable).with_name("rotator"))


def rotator(stack: Stack, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rotator --config CONFIG ARGS…`` with rotator's AWS identity and nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
    env.update(stack.aws_env())
    return subprocess.run(
        [ROTATOR, "--log-level", "WARNING", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def bao(stack: Stack, *args: str) -> str:
    """The OpenBao CLI as the operator (root token), stdout only."""
    env = {"BAO_ADDR": stack.openbao.url, "BAO_TOKEN": ROOT_TOKEN, "HOME": str(stack.workdir)}
    done = subprocess.run(
        [tool("bao"), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def served(stack: Stack, spec: TargetSpec) -> set[str]:
    """The key each destination serves, read as consumers read (other fields checked too)."""
    values = set()
    for where, data in stack.consumer_reads(spec):
        assert data is not None, where
        assert {k: data[k] for k in OTHER_FIELDS} == OTHER_FIELDS, where
        values.add(data[FIELD])
    return values


def wait_until(deadline: str) -> None:
    """Sleep until an ISO 8601 deadline (a ``revoke_due_at`` that rotator printed) has passed."""
    due = datetime.fromisoformat(deadline)
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.2)


def test_restoring_the_previous_value_keeps_it_alive_until_a_fresh_grace_after_the_next_rotation(
    stack: Stack, state_url: str, tmp_path: Path
) -> None:
    """After the runbook's restore, revoke-due refuses the restored key while it is served; the
    next rotation replaces it everywhere and gives it, with the key rolled away from, a fresh
    grace from its promotion, so neither is revoked at once."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    short = stack.write_config(tmp_path / "short.yaml", state_url=state_url, policy={"grace": "1s"})
    long = stack.write_config(tmp_path / "long.yaml", state_url=state_url, policy={"grace": "1h"})
    first = rotator(stack, short, "rotate", spec.name, "--json")
    assert first.returncode == 0, first.stderr
    (result,) = json.loads(first.stdout)
    assert result["outcome"] == "promoted"
    (rotated_to,) = served(stack, spec)
    wait_until(result["revoke_due_at"])
    assert rotator(stack, short, "revoke-due").returncode == 0  # the seeded key
    second = rotator(stack, short, "rotate", spec.name, "--json")
    (result,) = json.loads(second.stdout)
    assert result["outcome"] == "promoted", second.stderr
    previous_id = json.loads(first.stdout)[0]["new_key_id"]
    rotated_to_id = result["new_key_id"]
    rotated_from = rotated_to
    (rotated_to,) = served(stack, spec)

    # The runbook's diagnosis: the previous Vault version and the AWSPREVIOUS version.
    metadata = json.loads(
        bao(stack, "kv", "metadata", "get", "-mount=secret", "-format=json", spec.vault_path)
    )
    previous = metadata["data"]["current_version"] - 1
    previous_key = bao(
        stack,
        "kv",
        "get",
        "-mount=secret",
        f"-version={previous}",
        f"-field={FIELD}",
        spec.vault_path,
    )
    assert previous_key == rotated_from
    stages = stack.aws_stages(spec)
    current_id = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
    aws_previous_id = next(v for v, labels in stages.items() if "AWSPREVIOUS" in labels)

    # The runbook's fix.
    bao(stack, "kv", "rollback", "-mount=secret", f"-version={previous}", spec.vault_path)
    stack.moto.admin_client().update_secret_version_stage(
        SecretId=spec.aws_secret_id,
        VersionStage="AWSCURRENT",
        MoveToVersionId=aws_previous_id,
        RemoveFromVersionId=current_id,
    )
    assert served(stack, spec) == {previous_key}
    assert stack.key_works(previous_key)

    # What rotator does afterwards: refuse to revoke what is served again…
    wait_until(result["revoke_due_at"])
    refused = rotator(stack, short, "revoke-due", "--json")
    assert refused.returncode == 1
    assert [(r["key_id"], r["outcome"]) for r in json.loads(refused.stdout)] == [
        (previous_id, "refused")
    ]
    assert stack.key_works(previous_key)

    # …then the next rotation (an hour's grace) replaces both keys and gives both that grace:
    third = rotator(stack, long, "rotate", spec.name, "--json")
    (result,) = json.loads(third.stdout)
    assert result["outcome"] == "promoted", third.stderr
    (newest,) = served(stack, spec)
    assert newest not in {previous_key, rotated_to}
    history = json.loads(rotator(stack, long, "history", spec.name, "--json").stdout)
    promoted = next(e for e in history if e["event"] == "key.promoted")  # newest first
    retiring = promoted["facts"]["retiring"]
    assert {r["key_id"] for r in retiring} == {rotated_to_id, previous_id}
    due = {datetime.fromisoformat(r["revoke_due_at"]) for r in retiring}
    assert due == {datetime.fromisoformat(result["revoke_due_at"])}
    nothing = rotator(stack, long, "revoke-due", "--json")
    assert nothing.returncode == 0, nothing.stdout
    assert json.loads(nothing.stdout) == []
    assert stack.key_works(previous_key)
    assert stack.key_works(rotated_to)
    assert stack.key_works(newest)
    assert InvariantChecker(stack, state_url).check() == []
