"""The destination contract (rotator.contracts.Destination), run unchanged on every backend."""

from __future__ import annotations

import uuid

import pytest

from rotator.contracts import OWNER, CurrentValue, Destination, StagedValue
from rotator.errors import AuthError, ConflictError, PermanentError, TransientError
from rotator.secret import Secret
from tests.support.harness import Harness

OLD = "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"
NEW = "NewKeyBBBBBBBBBBBBBBBBBBBBBBBBBB"
OTHER = "0therWriterCCCCCCCCCCCCCCCCCCCCC"
SEEDED = {"api_key": OLD, "endpoint": "https://api.mistral.ai", "team": "search"}


def rotation_id() -> str:
    return str(uuid.uuid4())


async def seeded(harness: Harness) -> tuple[str, Destination, CurrentValue]:
    """A fresh secret holding :data:`SEEDED`, its destination, and what it reads now."""
    path = harness.new_path()
    harness.seed(path, SEEDED)
    dest = harness.destination(path)
    return path, dest, await dest.read_current()


async def stage_new(dest: Destination, base: CurrentValue, rid: str | None = None) -> StagedValue:
    """Stage :data:`NEW` as key ``key-new`` under ``rid`` (a fresh rotation id by default)."""
    return await dest.stage(
        Secret(NEW), rotation_id=rid or rotation_id(), key_id="key-new", base=base
    )


async def test_missing_secret_reads_as_absent(harness: Harness) -> None:
    """A path with no secret reads as exists=False, with no value and no version."""
    current = await harness.destination(harness.new_path()).read_current()
    assert current == CurrentValue(exists=False)


async def test_read_current_gives_value_and_version(harness: Harness) -> None:
    """read_current returns the managed field as a Secret and the version consumers read."""
    _, _, current = await seeded(harness)
    assert current.exists
    assert current.secret == Secret(OLD)
    assert current.version is not None
    assert current.pending_version is None


async def test_stage_is_invisible_to_consumers(harness: Harness) -> None:
    """After stage, consumers still read the old value; a pending version reads back as new."""
    path, dest, base = await seeded(harness)
    staged = await stage_new(dest, base)
    assert harness.consumer_read(path) == SEEDED
    assert staged.base_version == base.version
    assert staged.fingerprint == Secret(NEW).fingerprint
    assert staged.pending is harness.pending
    if staged.pending:
        assert staged.version is not None
        assert await dest.read_back(staged.version) == Secret(NEW)
        assert (await dest.read_current()).pending_version == staged.version
    else:
        assert harness.version_count(path) == 1


async def test_promote_serves_new_value_and_keeps_other_fields(harness: Harness) -> None:
    """Promotion makes consumers read the new key; every other field survives (I6)."""
    path, dest, base = await seeded(harness)
    staged = await stage_new(dest, base)
    promoted = await dest.promote(staged, Secret(NEW))
    assert harness.consumer_read(path) == {**SEEDED, "api_key": NEW}
    assert promoted.previous_version == base.version
    assert promoted.version != base.version
    assert await dest.read_back(promoted.version) == Secret(NEW)
    current = await dest.read_current()
    assert current.secret == Secret(NEW)
    assert current.version == promoted.version
    assert current.pending_version is None


async def test_promote_stamps_ownership_marks(harness: Harness) -> None:
    """Where promotion stamps metadata, it names rotator, the key, the rotation and the value."""
    if not harness.stamps_marks:
        pytest.skip(f"{harness.backend} keeps no per-promotion marks (AWS: tags at creation)")
    _, dest, base = await seeded(harness)
    rid = rotation_id()
    promoted = await dest.promote(await stage_new(dest, base, rid), Secret(NEW))
    current = await dest.read_current()
    assert (current.managed_by, current.key_id, current.rotation_id, current.fingerprint) == (
        OWNER,
        "key-new",
        rid,
        Secret(NEW).fingerprint,
    )
    assert current.version == promoted.version


async def test_restage_with_same_rotation_id_is_a_no_op(harness: Harness) -> None:
    """Staging again with the same rotation id returns the same record and adds no version."""
    path, dest, base = await seeded(harness)
    rid = rotation_id()
    first = await stage_new(dest, base, rid)
    count = harness.version_count(path)
    again = await stage_new(dest, base, rid)
    assert again == first
    assert harness.version_count(path) == count
    assert harness.consumer_read(path) == SEEDED


async def test_same_rotation_id_for_another_value_conflicts(harness: Harness) -> None:
    """A pending version is bound to its value: the same rotation id with another key conflicts."""
    if not harness.pending:
        pytest.skip(f"{harness.backend} stages nothing, so there is nothing to bind")
    _, dest, base = await seeded(harness)
    rid = rotation_id()
    await stage_new(dest, base, rid)
    with pytest.raises(ConflictError) as caught:
        await dest.stage(Secret(OTHER), rotation_id=rid, key_id="key-other", base=base)
    assert OTHER not in str(caught.value)
    assert NEW not in str(caught.value)


async def test_write_between_read_and_stage_is_not_clobbered(harness: Harness) -> None:
    """A concurrent writer after the plan's read is refused by the compare-and-swap on the
    planned version: stage fails with ConflictError, or (staging works from the plan's read
    without reading again) promote does. Their value stays, and a roll back leaves no pending
    version of ours."""
    path, dest, base = await seeded(harness)
    harness.seed(path, {**SEEDED, "api_key": OTHER})
    staged: StagedValue | None
    try:
        staged = await stage_new(dest, base)
    except ConflictError:
        staged = None
    else:
        with pytest.raises(ConflictError):
            await dest.promote(staged, Secret(NEW))
    assert harness.consumer_read(path) == {**SEEDED, "api_key": OTHER}
    if staged is not None:
        await dest.roll_back(staged)
    assert (await dest.read_current()).pending_version is None
    assert harness.consumer_read(path) == {**SEEDED, "api_key": OTHER}


async def test_write_between_stage_and_promote_is_not_clobbered(harness: Harness) -> None:
    """A concurrent writer after stage makes promote fail with ConflictError; their value stays."""
    path, dest, base = await seeded(harness)
    staged = await stage_new(dest, base)
    harness.seed(path, {**SEEDED, "api_key": OTHER})
    with pytest.raises(ConflictError) as caught:
        await dest.promote(staged, Secret(NEW))
    assert harness.consumer_read(path) == {**SEEDED, "api_key": OTHER}
    assert NEW not in str(caught.value)
    assert OTHER not in str(caught.value)


async def test_promote_is_idempotent(harness: Harness) -> None:
    """Promoting an already promoted value changes nothing and returns the same record."""
    path, dest, base = await seeded(harness)
    staged = await stage_new(dest, base)
    first = await dest.promote(staged, Secret(NEW))
    count = harness.version_count(path)
    assert await dest.promote(staged, Secret(NEW)) == first
    assert harness.version_count(path) == count
    assert harness.consumer_read(path) == {**SEEDED, "api_key": NEW}


async def test_promote_refuses_a_value_that_was_not_staged(harness: Harness) -> None:
    """promote() checks the plaintext against the staged fingerprint before touching anything."""
    path, dest, base = await seeded(harness)
    staged = await stage_new(dest, base)
    with pytest.raises(ValueError, match="not the staged value"):
        await dest.promote(staged, Secret(OTHER))
    assert harness.consumer_read(path) == SEEDED


async def test_roll_back_before_promotion_leaves_consumers_untouched(harness: Harness) -> None:
    """Rolling back a staged value removes our pending version (if any) and is idempotent."""
    path, dest, base = await seeded(harness)
    staged = await stage_new(dest, base)
    assert await dest.roll_back(staged) is harness.pending
    assert await dest.roll_back(staged) is False
    current = await dest.read_current()
    assert current.pending_version is None
    assert current.version == base.version
    assert harness.consumer_read(path) == SEEDED


async def test_stage_again_after_roll_back(harness: Harness) -> None:
    """After a roll back the same rotation can stage again and be promoted (retry)."""
    path, dest, base = await seeded(harness)
    rid = rotation_id()
    await dest.roll_back(await stage_new(dest, base, rid))
    staged = await stage_new(dest, base, rid)
    if staged.pending:
        assert (await dest.read_current()).pending_version == staged.version
    await dest.promote(staged, Secret(NEW))
    assert harness.consumer_read(path) == {**SEEDED, "api_key": NEW}


async def test_roll_back_after_promotion_restores_previous_value(harness: Harness) -> None:
    """Rolling back a promoted value serves the previous data again, all fields included."""
    path, dest, base = await seeded(harness)
    staged = await stage_new(dest, base)
    await dest.promote(staged, Secret(NEW))
    assert await dest.roll_back(staged) is True
    assert harness.consumer_read(path) == SEEDED
    assert (await dest.read_current()).secret == Secret(OLD)
    assert await dest.roll_back(staged) is False


async def test_roll_back_never_overwrites_a_later_write(harness: Harness) -> None:
    """If someone wrote after our promotion, roll back raises ConflictError and writes nothing."""
    path, dest, base = await seeded(harness)
    staged = await stage_new(dest, base)
    await dest.promote(staged, Secret(NEW))
    harness.seed(path, {**SEEDED, "api_key": OTHER})
    with pytest.raises(ConflictError):
        await dest.roll_back(staged)
    assert harness.consumer_read(path) == {**SEEDED, "api_key": OTHER}


async def test_foreign_managed_secret_is_refused(harness: Harness) -> None:
    """A secret whose managed-by mark names another manager is never written (ConflictError)."""
    path = harness.new_path()
    harness.seed(path, SEEDED)
    harness.mark_foreign(path, "external-secrets")
    dest = harness.destination(path)
    base = await dest.read_current()
    assert base.foreign
    with pytest.raises(ConflictError, match="external-secrets"):
        await stage_new(dest, base)
    assert harness.consumer_read(path) == SEEDED


async def test_foreign_pending_version_is_reported_not_clobbered(harness: Harness) -> None:
    """Someone else's AWSPENDING, as the plan read it, makes stage fail with ConflictError and
    stays in place. (One put after the plan's read is the check-then-act race of the AWS
    module docstring: stage works from the plan's read.)"""
    if not harness.pending:
        pytest.skip(f"{harness.backend} has no pending state")
    path, dest, _ = await seeded(harness)
    harness.stage_foreign(path, {**SEEDED, "api_key": OTHER})
    base = await dest.read_current()
    foreign = base.pending_version
    assert foreign is not None
    with pytest.raises(ConflictError, match="AWSPENDING"):
        await stage_new(dest, base)
    assert (await dest.read_current()).pending_version == foreign
    assert harness.consumer_read(path) == SEEDED


async def test_missing_secret_without_create_missing_is_refused(harness: Harness) -> None:
    """Staging into a secret that does not exist fails permanently unless create_missing is on."""
    path = harness.new_path()
    dest = harness.destination(path)
    with pytest.raises(PermanentError, match="create_missing") as caught:
        await stage_new(dest, await dest.read_current())
    assert not isinstance(caught.value, AuthError)
    assert harness.consumer_read(path) is None


async def test_create_missing_creates_the_secret_at_promotion(harness: Harness) -> None:
    """With create_missing, nothing is visible after stage and the secret appears at promotion."""
    path = harness.new_path()
    dest = harness.destination(path, create_missing=True)
    staged = await stage_new(dest, await dest.read_current())
    assert staged.pending is False
    assert harness.consumer_read(path) is None
    promoted = await dest.promote(staged, Secret(NEW))
    assert promoted.previous_version is None
    assert harness.consumer_read(path) == {"api_key": NEW}
    current = await dest.read_current()
    assert current.managed_by == OWNER
    assert current.version == promoted.version
    assert await dest.promote(staged, Secret(NEW)) == promoted


async def test_roll_back_never_deletes_a_created_secret(harness: Harness) -> None:
    """Rolling back a promotion that created the secret raises PermanentError and keeps it."""
    path = harness.new_path()
    dest = harness.destination(path, create_missing=True)
    staged = await stage_new(dest, await dest.read_current())
    await dest.promote(staged, Secret(NEW))
    with pytest.raises(PermanentError, match="never deletes"):
        await dest.roll_back(staged)
    assert harness.consumer_read(path) == {"api_key": NEW}


async def test_write_denied_is_a_clear_permanent_auth_error(harness: Harness) -> None:
    """An identity that may read but not write gets AuthError (permanent) naming the secret."""
    path = harness.new_path()
    harness.seed(path, SEEDED)
    dest = harness.denied_destination(path)
    base = await dest.read_current()
    assert base.secret == Secret(OLD)
    with pytest.raises(AuthError) as caught:
        await stage_new(dest, base)
    assert not caught.value.transient
    assert path in str(caught.value)
    assert "\n" not in str(caught.value)
    assert harness.consumer_read(path) == SEEDED


async def test_check_access_passes_for_a_writable_secret(harness: Harness) -> None:
    """check_access reports every check ok for a secret the identity may read and write."""
    path, dest, _ = await seeded(harness)
    checks = await dest.check_access()
    assert checks
    assert all(c.ok for c in checks), [c.line() for c in checks]
    assert {c.check for c in checks} >= {"read", "write"}
    assert harness.consumer_read(path) == SEEDED


async def test_check_access_reports_a_denied_write(harness: Harness) -> None:
    """check_access returns a failed 'write' line (not an exception) for a read-only identity."""
    path = harness.new_path()
    harness.seed(path, SEEDED)
    checks = await harness.denied_destination(path).check_access()
    failed = [c for c in checks if not c.ok]
    assert [c.check for c in failed] == ["write"], [c.line() for c in checks]
    assert failed[0].line().startswith("FAIL")
    assert harness.consumer_read(path) == SEEDED


async def test_server_down_is_transient(harness: Harness) -> None:
    """An unreachable server is a TransientError (retry later), from reads and from checks."""
    dest = harness.down_destination(harness.new_path())
    with pytest.raises(TransientError):
        await dest.read_current()
    checks = await dest.check_access()
    assert checks
    assert not all(c.ok for c in checks)


async def test_read_back_of_unknown_version_is_permanent(harness: Harness) -> None:
    """Reading back a version that does not exist is a PermanentError."""
    _, dest, _ = await seeded(harness)
    with pytest.raises(PermanentError):
        await dest.read_back("987654" if not harness.pending else str(uuid.uuid4()))
