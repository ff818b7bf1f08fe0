"""What `rotator rotate` logs, as an operator running it next to the daemon reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

ROTATOR = str(Path(sys.executable).with_name("rotator"))


def rotate_logging_json(stack: Stack, cfg: Path, target: str) -> list[dict[str, Any]]:
    """Run ``rotator rotate`` at INFO with JSON logs; its log events (stderr), in order."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
    env.update(stack.aws_env())
    done = subprocess.run(
        [ROTATOR, "--log-format", "json", "--log-level", "INFO", "rotate", target, "-c", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]


def floats_in(value: object) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats_in(v)]
    return []


def test_cli_rotate_logs_each_fact_once_with_durations_in_ms(
    stack: Stack, state_url: str, tmp_path: Path
) -> None:
    """A CLI rotation into Vault and AWS logs one event per fact: the key's creation and its
    verification once, each destination's stage and promotion once; and every number of
    seconds it logs is rounded to the millisecond."""
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    cfg = stack.write_config(tmp_path / "rotator.yaml", state_url=state_url)
    events = rotate_logging_json(stack, cfg, spec.name)
    names = Counter(e["event"] for e in events)
    created = sorted(n for n in names if n.endswith("key_created"))
    verified = sorted(n for n in names if n.endswith("key_verified"))
    assert (created, verified) == (["mistral.key_created"], ["mistral.key_verified"]), names
    assert (names["mistral.key_created"], names["mistral.key_verified"]) == (1, 1), names
    per_destination = Counter(
        (e["event"], e["destination"])
        for e in events
        if e["event"] in {"destination_staged", "destination_promoted"}
    )
    assert len(per_destination) == 4, per_destination
    assert set(per_destination.values()) == {1}, per_destination
    facts = [e for e in events if e["event"] != "state_schema_migrated"]
    rotation_id = facts[0]["rotation_id"]
    assert {(e["target"], e["rotation_id"]) for e in facts} == {(spec.name, rotation_id)}
    numbers = [n for e in events for n in floats_in(e)]
    assert numbers, "the verification's elapsed time is logged"
    assert [round(n, 3) for n in numbers] == numbers
