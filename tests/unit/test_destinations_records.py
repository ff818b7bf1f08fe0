"""The destination records: journal round trips, ownership, check lines, rotation ids."""

from __future__ import annotations

import json

import pytest

from rotator.contracts import AccessCheck, CurrentValue, PromotedValue, StagedValue
from rotator.destinations._common import check_rotation_id, field_of, with_field
from rotator.errors import PermanentError
from rotator.secret import Secret

STAGED = StagedValue(
    destination="aws-main:mistral/prod#api_key",
    rotation_id="0b6f2a3c-5d1e-4c8f-9a7b-2e4d6f8a0c1e",
    key_id="key-1",
    fingerprint="abcdef012345",
    base_version="v-old",
    version="0b6f2a3c-5d1e-4c8f-9a7b-2e4d6f8a0c1e",
    base_marks={"managed-by": "rotator", "key_id": "key-0"},
)


def test_staged_value_round_trips_through_json() -> None:
    """A StagedValue survives to_record → JSON → from_record unchanged."""
    again = StagedValue.from_record(json.loads(json.dumps(STAGED.to_record())))
    assert again == STAGED
    assert again.pending


def test_promoted_value_round_trips_through_json() -> None:
    """A PromotedValue survives to_record → JSON → from_record unchanged."""
    promoted = STAGED.promoted("v-new")
    assert promoted == PromotedValue(
        destination=STAGED.destination,
        rotation_id=STAGED.rotation_id,
        key_id="key-1",
        fingerprint="abcdef012345",
        version="v-new",
        previous_version="v-old",
    )
    assert PromotedValue.from_record(json.loads(json.dumps(promoted.to_record()))) == promoted


@pytest.mark.parametrize(
    "broken",
    [
        {"rotation_id": ""},
        {"key_id": None},
        {"version": 3},
        {"base_marks": ["not", "a", "map"]},
    ],
)
def test_malformed_journal_records_are_refused(broken: dict[str, object]) -> None:
    """from_record raises instead of building a record with holes."""
    record = {**STAGED.to_record(), **broken}
    with pytest.raises((ValueError, TypeError)):
        StagedValue.from_record(record)  # type: ignore[arg-type]


def test_staged_value_without_version_is_not_pending() -> None:
    """A stage that wrote nothing (Vault) is not pending."""
    record = {**STAGED.to_record(), "version": None}
    assert not StagedValue.from_record(record).pending


def test_foreign_is_another_manager_only() -> None:
    """Only a managed-by mark naming someone else makes a secret foreign."""
    assert not CurrentValue(exists=True).foreign
    assert not CurrentValue(exists=True, managed_by="rotator").foreign
    assert CurrentValue(exists=True, managed_by="external-secrets").foreign


def test_access_check_line() -> None:
    """A check renders as one line: verdict, destination, check, detail."""
    line = AccessCheck("vault-main:secret/p#k", "write", False, "the token lacks update").line()
    assert line == "FAIL vault-main:secret/p#k: write: the token lacks update"


@pytest.mark.parametrize(
    "rotation_id", ["short", "x" * 65, "0b6f2a3c 5d1e 4c8f 9a7b 2e4d6f8a0c1e", "é" * 40]
)
def test_rotation_ids_must_suit_client_request_tokens(rotation_id: str) -> None:
    """Rotation ids are 32-64 letters, digits or dashes (an AWS ClientRequestToken)."""
    with pytest.raises(ValueError, match="rotation_id"):
        check_rotation_id(rotation_id)


def test_json_field_is_set_and_other_fields_kept() -> None:
    """with_field sets one field of a JSON object and keeps every other; field_of reads it."""
    document = Secret(json.dumps({"api_key": "old-value", "endpoint": "e", "n": 3}))
    updated = with_field("d", document, "api_key", Secret("new-value"))
    assert json.loads(updated.reveal()) == {"api_key": "new-value", "endpoint": "e", "n": 3}
    assert field_of("d", updated, "api_key") == Secret("new-value")
    assert with_field("d", document, None, Secret("plain-value")) == Secret("plain-value")


def test_field_of_a_non_object_is_a_permanent_error() -> None:
    """A field cannot be read from a string that is not a JSON object."""
    with pytest.raises(PermanentError, match="not a JSON object"):
        field_of("d", Secret("[1, 2]"), "api_key")
