"""Canary: a full rotation through OpenBao and moto never puts the key in a log line or error."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest

from rotator.contracts import Destination
from rotator.errors import ConflictError
from rotator.logs import configure_logging
from rotator.secret import Secret
from tests.support.harness import AwsHarness, Harness, VaultHarness

pytestmark = pytest.mark.integration

CANARY = "CanaryKeyDDDDDDDDDDDDDDDDDDDDDDD"


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=buf)
    yield buf
    configure_logging(level="WARNING", fmt="json", stream=io.StringIO())


async def rotate_and_conflict(harness: Harness) -> list[str]:
    path = harness.new_path()
    harness.seed(path, {"api_key": "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"})
    dest: Destination = harness.destination(path)
    base = await dest.read_current()
    staged = await dest.stage(Secret(CANARY), rotation_id=str(uuid.uuid4()), key_id="k", base=base)
    await dest.promote(staged, Secret(CANARY))
    await dest.read_back((await dest.read_current()).version or "")
    await dest.roll_back(staged)
    harness.seed(path, {"api_key": "0therWriterCCCCCCCCCCCCCCCCCCCCC"})
    errors = []
    try:
        await dest.stage(Secret(CANARY), rotation_id=str(uuid.uuid4()), key_id="k", base=base)
    except ConflictError as exc:
        errors.append(str(exc))
    return errors


async def test_no_key_in_logs_or_errors(
    debug_log: io.StringIO, vault: VaultHarness, aws: AwsHarness
) -> None:
    """At DEBUG, stage/promote/read back/roll back/conflict on both backends log events and
    raise errors that never contain the key, only its fingerprint."""
    errors = await rotate_and_conflict(vault) + await rotate_and_conflict(aws)
    output = debug_log.getvalue()
    assert "destination_promoted" in output
    assert Secret(CANARY).fingerprint in output
    assert CANARY not in output
    assert len(errors) == 2
    assert all(CANARY not in e for e in errors)
