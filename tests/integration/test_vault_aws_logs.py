"""Canary: a full rotation through OpenBao and moto never puts the key in a log event or error.

Events are captured *before* the redaction layers (``structlog.testing.capture_logs`` for
rotator's own events, a plain handler on the root logger for the standard-library loggers of
hvac, botocore and urllib3): redaction would mask the canary whatever the code logged, so a test
of the rendered output could not fail.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator.contracts import Destination
from rotator.errors import ConflictError
from rotator.logs import configure_logging
from rotator.secret import Secret
from tests.support.harness import AwsHarness, Harness, VaultHarness

pytestmark = pytest.mark.integration

CANARY = "canary value, not key-shaped: 7f3e"


class RawRecords(logging.Handler):
    """Keeps every standard-library record as logged, before any formatter runs."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"{record.getMessage()} {record.args!r} {record.__dict__!r}")


@pytest.fixture
def raw_logs() -> Iterator[tuple[list[MutableMapping[str, Any]], RawRecords]]:
    """rotator's structlog events and every stdlib record at DEBUG, unredacted."""
    configure_logging(level="DEBUG", fmt="json", stream=io.StringIO())
    records = RawRecords()
    logging.getLogger().addHandler(records)
    try:
        with capture_logs() as events:
            yield events, records
    finally:
        logging.getLogger().removeHandler(records)
        configure_logging(level="WARNING", fmt="json", stream=io.StringIO())


async def rotate_and_conflict(harness: Harness) -> list[BaseException]:
    path = harness.new_path()
    harness.seed(path, {"api_key": "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"})
    dest: Destination = harness.destination(path)
    base = await dest.read_current()
    staged = await dest.stage(Secret(CANARY), rotation_id=str(uuid.uuid4()), key_id="k", base=base)
    if staged.pending:
        await dest.read_back(staged.version or "")
    await dest.promote(staged, Secret(CANARY))
    await dest.read_back((await dest.read_current()).version or "")
    await dest.roll_back(staged)
    harness.seed(path, {"api_key": "0therWriterCCCCCCCCCCCCCCCCCCCCC"})
    errors: list[BaseException] = []
    try:  # a write since the plan's read: refused at the promotion's compare-and-swap at last
        late = await dest.stage(
            Secret(CANARY), rotation_id=str(uuid.uuid4()), key_id="k", base=base
        )
        await dest.promote(late, Secret(CANARY))
    except ConflictError as exc:
        errors.append(exc)
    return errors


async def test_no_key_in_logs_or_errors(
    raw_logs: tuple[list[MutableMapping[str, Any]], RawRecords],
    vault: VaultHarness,
    aws: AwsHarness,
) -> None:
    """At DEBUG, stage/read back/promote/roll back/conflict on both backends log events and
    raise errors that never contain the key, only its fingerprint, even before redaction."""
    events, records = raw_logs
    errors = await rotate_and_conflict(vault) + await rotate_and_conflict(aws)
    assert {"destination_staged", "destination_promoted", "backend_call"} <= {
        e["event"] for e in events
    }
    rendered = json.dumps(events, default=repr)
    assert Secret(CANARY).fingerprint in rendered
    assert CANARY not in rendered
    assert all(CANARY not in text for text in records.texts)
    assert len(errors) == 2
    for error in errors:
        assert CANARY not in f"{error} {error!r} {error.args!r}"
