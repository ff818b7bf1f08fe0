"""AWS Secrets Manager destination on a real moto server: the moto fix, IAM, formats, states."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

import botocore.session
import pytest

from rotator.clock import SystemClock
from rotator.contracts import OWNER, Destination
from rotator.destinations.aws.api import Boto3SecretsManager, SecretVersion
from rotator.destinations.aws.destination import AwsDestination
from rotator.destinations.aws.schema import AwsDestination as AwsDestinationConfig
from rotator.destinations.aws.schema import AwsSecretsManagerStore
from rotator.destinations.registry import StoreConnections, build_destination
from rotator.errors import AuthError, ConflictError, PermanentError
from rotator.secret import Secret
from tests.support.harness import (
    IAM_ACTIONS,
    IAM_POLICY,
    PREFIX,
    AwsHarness,
    AwsIdentity,
)
from tests.support.servers import AWS_REGION

pytestmark = pytest.mark.integration

OLD = "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"
NEW = "NewKeyBBBBBBBBBBBBBBBBBBBBBBBBBB"


async def rotate(dest: Destination, secret: str = NEW) -> None:
    base = await dest.read_current()
    staged = await dest.stage(
        Secret(secret), rotation_id=str(uuid.uuid4()), key_id="key-new", base=base
    )
    await dest.promote(staged, Secret(secret))


def test_moto_fix_plain_get_serves_the_new_awscurrent(aws: AwsHarness) -> None:
    """With the launcher's fix, a plain GetSecretValue returns the version AWSCURRENT moved to."""
    client = aws.env.admin_client()
    name = aws.new_path()
    first = client.create_secret(Name=name, SecretString="v1")["VersionId"]
    second = client.put_secret_value(
        SecretId=name, SecretString="v2", VersionStages=["AWSPENDING"]
    )["VersionId"]
    assert client.get_secret_value(SecretId=name)["SecretString"] == "v1"
    client.update_secret_version_stage(
        SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=second, RemoveFromVersionId=first
    )
    answer = client.get_secret_value(SecretId=name)
    assert (answer["VersionId"], answer["SecretString"]) == (second, "v2")
    assert "AWSPREVIOUS" in aws.stages(name)[first]


def test_moto_fix_a_token_stays_bound_to_its_pending_value(aws: AwsHarness) -> None:
    """With the launcher's fix, a put with the token of a pending version is ignored for the
    same value and refused for another, as AWS does; the pending value is never replaced."""
    client = aws.env.admin_client()
    name = aws.new_path()
    client.create_secret(Name=name, SecretString="v1")
    token = str(uuid.uuid4())
    put = {"SecretId": name, "ClientRequestToken": token, "VersionStages": ["AWSPENDING"]}
    first = client.put_secret_value(**put, SecretString="v2")
    again = client.put_secret_value(**put, SecretString="v2")
    assert (again["VersionId"], again["VersionStages"]) == (token, ["AWSPENDING"])
    assert first["VersionId"] == token
    with pytest.raises(client.exceptions.ResourceExistsException):
        client.put_secret_value(**put, SecretString="v3")
    assert client.get_secret_value(SecretId=name, VersionId=token)["SecretString"] == "v2"


async def test_promotion_leaves_awscurrent_awsprevious_and_no_awspending(aws: AwsHarness) -> None:
    """After a rotation the new version is AWSCURRENT alone, the old one AWSPREVIOUS, and no
    version carries AWSPENDING (docs/configuration.md, "AWS Secrets Manager destination")."""
    path = aws.new_path()
    aws.seed(path, {"api_key": OLD})
    dest = aws.destination(path)
    base = await dest.read_current()
    rid = str(uuid.uuid4())
    staged = await dest.stage(Secret(NEW), rotation_id=rid, key_id="k", base=base)
    assert staged.version == rid
    assert aws.stages(path)[rid] == ["AWSPENDING"]
    await dest.promote(staged, Secret(NEW))
    stages = aws.stages(path)
    assert stages[rid] == ["AWSCURRENT"]
    assert base.version is not None
    assert stages[base.version] == ["AWSPREVIOUS"]
    assert not any("AWSPENDING" in labels for labels in stages.values())


async def test_plain_string_secret_is_replaced_whole(aws: AwsHarness) -> None:
    """Without a field the SecretString is the key itself."""
    path = aws.new_path()
    client = aws.env.admin_client()
    client.create_secret(Name=path, SecretString=OLD)
    dest = aws.destination(path, field=None)
    assert (await dest.read_current()).secret == Secret(OLD)
    await rotate(dest)
    assert client.get_secret_value(SecretId=path)["SecretString"] == NEW


async def test_field_on_a_non_json_secret_is_a_permanent_error(aws: AwsHarness) -> None:
    """A configured field on a secret that is not a JSON object fails without writing."""
    path = aws.new_path()
    aws.env.admin_client().create_secret(Name=path, SecretString="not json")
    dest = aws.destination(path)
    with pytest.raises(PermanentError, match="not a JSON object"):
        await dest.read_current()
    assert aws.version_count(path) == 1


async def test_empty_secret_gets_its_first_value_at_promotion(aws: AwsHarness) -> None:
    """A secret created without a value (e.g. by Terraform) is filled at promotion, not staged:
    its first version would be served at once."""
    path = aws.new_path()
    aws.env.admin_client().create_secret(Name=path)
    dest = aws.destination(path)
    base = await dest.read_current()
    assert base.exists
    assert base.version is None
    staged = await dest.stage(Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k", base=base)
    assert not staged.pending
    assert aws.version_count(path) == 0
    await dest.promote(staged, Secret(NEW))
    assert aws.consumer_read(path) == {"api_key": NEW}


async def test_create_missing_uses_kms_key_and_tags(aws: AwsHarness) -> None:
    """A created secret carries the configured KMS key id, the tags and managed-by: rotator."""
    path = aws.new_path()
    dest = AwsDestination(
        api=aws.env.client(aws.env.rotator),
        pool=aws.pool,
        store="moto",
        secret_id=path,
        field="api_key",
        create_missing=True,
        kms_key_id="alias/rotator-test",
        tags={"team": "search"},
    )
    await rotate(dest)
    described = aws.env.admin_client().describe_secret(SecretId=path)
    assert described["KmsKeyId"] == "alias/rotator-test"
    assert {t["Key"]: t["Value"] for t in described["Tags"]} == {
        "team": "search",
        "managed-by": OWNER,
    }


async def test_unknown_credentials_are_an_auth_error(aws: AwsHarness) -> None:
    """moto enforces IAM: credentials it does not know are refused as a permanent AuthError."""
    stranger = AwsIdentity("stranger", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/EXAMPLEKEY00")
    dest = aws.destination_as(stranger, aws.new_path())
    with pytest.raises(AuthError) as caught:
        await dest.read_current()
    assert "AKIAIOSFODNN7EXAMPLE" not in str(caught.value)


@pytest.mark.parametrize("action", IAM_ACTIONS)
async def test_every_action_of_the_iam_policy_is_needed(aws: AwsHarness, action: str) -> None:
    """Under the shipped policy minus one action, the step that needs it fails with AuthError
    naming that action (the policy is minimal); the full policy passes the contract suite."""
    path = aws.new_path()
    create = action == "CreateSecret"
    if not create:
        aws.seed(path, {"api_key": OLD})
    dest = aws.destination_as(aws.env.lacking[action], path, create_missing=create)
    with pytest.raises(AuthError, match=f"secretsmanager:{action}"):
        await rotate(dest)
    if not create:
        assert aws.consumer_read(path) == {"api_key": OLD}


def test_iam_policy_document_is_valid_and_scoped(aws: AwsHarness) -> None:
    """The shipped IAM policy names only real actions and its resources match the test secrets'
    ARNs (as moto mints them) and nothing outside the mistral/ prefix. moto cannot enforce the
    Resource part (it authorizes Secrets Manager calls against '*'), so it is checked here."""
    document = json.loads(IAM_POLICY.read_text())
    assert document["Version"] == "2012-10-17"
    session = botocore.session.get_session()
    known = {
        service: set(session.get_service_model(service).operation_names)
        for service in ("secretsmanager", "kms")
    }
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            service, name = action.split(":")
            assert name in known[service], action
    patterns = [
        _arn_pattern(s["Resource"])
        for s in document["Statement"]
        if s["Resource"].startswith("arn:aws:secretsmanager")
    ]
    client = aws.env.admin_client()
    inside = client.create_secret(Name=aws.new_path(), SecretString="x")["ARN"]
    outside = client.create_secret(Name=f"other/{uuid.uuid4().hex}", SecretString="x")["ARN"]
    assert inside.split(":secret:")[1].startswith(PREFIX)
    assert all(p.fullmatch(inside) for p in patterns)
    assert not any(p.fullmatch(outside) for p in patterns)


def _arn_pattern(resource: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in resource.split("*")))


async def test_registry_builds_from_config_with_the_default_chain(
    aws: AwsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From config models, the destination takes credentials from the default AWS chain (here
    the environment, holding the rotator user's key) and the store's endpoint and region."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.env.rotator.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.env.rotator.secret_access_key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/rotator-test")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/rotator-test")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    path = aws.new_path()
    aws.seed(path, {"api_key": OLD})
    store = AwsSecretsManagerStore(
        type="aws_secrets_manager",
        region=AWS_REGION,
        endpoint_url=aws.env.url,
        timeout=timedelta(seconds=5),
    )
    dest = build_destination(
        store,
        AwsDestinationConfig(store="aws-main", secret_id=path, field="api_key"),
        pool=aws.pool,
        clock=SystemClock(),
        connections=StoreConnections(),
    )
    assert isinstance(dest, AwsDestination)
    assert dest.name == f"aws-main:{path}#api_key"
    assert (await dest.read_current()).secret == Secret(OLD)


async def test_secret_scheduled_for_deletion_is_reported(aws: AwsHarness) -> None:
    """A secret pending deletion is a permanent error to read and a failed 'state' check."""
    path = aws.new_path()
    aws.seed(path, {"api_key": OLD})
    aws.env.admin_client().delete_secret(SecretId=path, RecoveryWindowInDays=7)
    dest = aws.destination(path)
    with pytest.raises(PermanentError, match="scheduled for deletion"):
        await dest.read_current()
    checks = await dest.check_access()
    assert [(c.check, c.ok) for c in checks] == [("state", False)]


async def test_check_reports_a_rotation_in_progress(aws: AwsHarness) -> None:
    """check_access flags someone else's AWSPENDING while still probing read and write."""
    path = aws.new_path()
    aws.seed(path, {"api_key": OLD})
    aws.stage_foreign(path, {"api_key": NEW})
    checks = {c.check: c for c in await aws.destination(path).check_access()}
    assert not checks["state"].ok
    assert "AWSPENDING" in checks["state"].detail
    assert checks["read"].ok


async def test_check_of_a_secret_to_create_says_create_secret_was_not_probed(
    aws: AwsHarness,
) -> None:
    """For a missing secret with create_missing, check says CreateSecret was not probed (no
    call can try it without creating the secret) and names what the first promotion needs."""
    checks = await aws.destination(aws.new_path(), create_missing=True).check_access()
    assert [(c.check, c.ok) for c in checks] == [("read", True), ("create", True)]
    assert checks[1].detail == (
        "not probed: CreateSecret cannot be tried without creating the secret; the first"
        " promotion needs secretsmanager:CreateSecret (and TagResource)"
    )


async def test_write_probes_change_nothing(aws: AwsHarness) -> None:
    """check_access's write probes leave versions, labels and the served value as they were."""
    path = aws.new_path()
    aws.seed(path, {"api_key": OLD})
    before = (aws.stages(path), aws.version_count(path))
    checks = await aws.destination(path).check_access()
    assert all(c.ok for c in checks)
    assert (aws.stages(path), aws.version_count(path)) == before
    write = next(c for c in checks if c.check == "write")
    assert "AWS refused" in write.detail
    assert "CloudTrail" in write.detail
    assert aws.consumer_read(path) == {"api_key": OLD}


async def test_promote_after_awscurrent_moved_is_a_conflict(aws: AwsHarness) -> None:
    """RemoveFromVersionId is the CAS: if AWSCURRENT moved since staging, nothing changes."""
    path = aws.new_path()
    aws.seed(path, {"api_key": OLD})
    dest = aws.destination(path)
    staged = await dest.stage(
        Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k", base=await dest.read_current()
    )
    assert staged.base_version is not None
    client = aws.env.admin_client()
    other = client.put_secret_value(
        SecretId=path, SecretString=json.dumps({"api_key": "x"}), VersionStages=["custom"]
    )["VersionId"]
    client.update_secret_version_stage(
        SecretId=path,
        VersionStage="AWSCURRENT",
        MoveToVersionId=other,
        RemoveFromVersionId=staged.base_version,
    )
    with pytest.raises(ConflictError):
        await dest.promote(staged, Secret(NEW))
    assert aws.stages(path)[other] == ["custom", "AWSCURRENT"]


class RacingSecretsManager(Boto3SecretsManager):
    """The boto3 seam whose next AWSCURRENT move is preceded by someone else's move."""

    def __init__(self, inner: Boto3SecretsManager, race: Callable[[], None]) -> None:
        super().__init__(inner._client)
        self._race: Callable[[], None] | None = race

    def move_stage(
        self, secret_id: str, stage: str, *, to: str | None, away_from: str | None
    ) -> None:
        if stage == "AWSCURRENT" and self._race is not None:
            race, self._race = self._race, None
            race()
        super().move_stage(secret_id, stage, to=to, away_from=away_from)


async def test_writer_racing_the_label_move_is_not_clobbered(aws: AwsHarness) -> None:
    """If AWSCURRENT moves right before promote's UpdateSecretVersionStage (promote reads
    nothing first), RemoveFromVersionId makes the move fail: ConflictError, the racer's version
    stays current."""
    path = aws.new_path()
    aws.seed(path, {"api_key": OLD})
    admin = aws.env.admin_client()
    racer: list[str] = []

    def race() -> None:
        answer = admin.put_secret_value(SecretId=path, SecretString=json.dumps({"api_key": "r"}))
        racer.append(answer["VersionId"])

    dest = AwsDestination(
        api=RacingSecretsManager(aws.env.client(aws.env.rotator), race),
        pool=aws.pool,
        store="moto",
        secret_id=path,
        field="api_key",
    )
    staged = await dest.stage(
        Secret(NEW), rotation_id=str(uuid.uuid4()), key_id="k", base=await dest.read_current()
    )
    with pytest.raises(ConflictError, match="AWSCURRENT moved"):
        await dest.promote(staged, Secret(NEW))
    assert aws.consumer_read(path) == {"api_key": "r"}
    assert "AWSCURRENT" in aws.stages(path)[racer[0]]


class ReplayingSecretsManager(Boto3SecretsManager):
    """The boto3 seam as seen after a lost response: the first AWSCURRENT move is applied by the
    server, and the caller sees only the answer to botocore's replay of it."""

    def __init__(self, inner: Boto3SecretsManager) -> None:
        super().__init__(inner._client)
        self.replayed = False

    def move_stage(
        self, secret_id: str, stage: str, *, to: str | None, away_from: str | None
    ) -> None:
        super().move_stage(secret_id, stage, to=to, away_from=away_from)
        if stage == "AWSCURRENT" and not self.replayed:
            self.replayed = True
            super().move_stage(secret_id, stage, to=to, away_from=away_from)


async def test_promotion_whose_answer_was_lost_completes(aws: AwsHarness) -> None:
    """If the AWSCURRENT move succeeded but its answer was lost, botocore's replay fails
    (RemoveFromVersionId no longer holds AWSCURRENT); promote sees our version current, drops
    AWSPENDING and returns the promoted record instead of raising."""
    path = aws.new_path()
    aws.seed(path, {"api_key": OLD})
    api = ReplayingSecretsManager(aws.env.client(aws.env.rotator))
    dest = AwsDestination(api=api, pool=aws.pool, store="moto", secret_id=path, field="api_key")
    base = await dest.read_current()
    rid = str(uuid.uuid4())
    staged = await dest.stage(Secret(NEW), rotation_id=rid, key_id="k", base=base)
    promoted = await dest.promote(staged, Secret(NEW))
    assert api.replayed
    assert (promoted.version, promoted.previous_version) == (rid, base.version)
    assert aws.stages(path)[rid] == ["AWSCURRENT"]
    assert aws.consumer_read(path) == {"api_key": NEW}


class FirstValueRacer(Boto3SecretsManager):
    """The boto3 seam whose first-value put (labelled AWSCURRENT) is preceded by someone else's
    first value."""

    def __init__(self, inner: Boto3SecretsManager, race: Callable[[], None]) -> None:
        super().__init__(inner._client)
        self._race: Callable[[], None] | None = race

    def put_value(
        self, secret_id: str, *, token: str, value: Secret, stages: Sequence[str]
    ) -> SecretVersion:
        if "AWSCURRENT" in stages and self._race is not None:
            race, self._race = self._race, None
            race()
        return super().put_value(secret_id, token=token, value=value, stages=stages)


async def test_first_value_racing_another_writer_is_undone_and_a_conflict(
    aws: AwsHarness,
) -> None:
    """If someone gives an empty secret its first value between promote's DescribeSecret and its
    PutSecretValue (which moves AWSCURRENT off theirs), promote puts AWSCURRENT back on their
    version, leaves ours unlabelled and raises ConflictError; a roll back then changes nothing."""
    path = aws.new_path()
    admin = aws.env.admin_client()
    admin.create_secret(Name=path)
    racer: list[str] = []

    def race() -> None:
        answer = admin.put_secret_value(SecretId=path, SecretString=json.dumps({"api_key": "r"}))
        racer.append(answer["VersionId"])

    api = FirstValueRacer(aws.env.client(aws.env.rotator), race)
    dest = AwsDestination(api=api, pool=aws.pool, store="moto", secret_id=path, field="api_key")
    rid = str(uuid.uuid4())
    staged = await dest.stage(
        Secret(NEW), rotation_id=rid, key_id="k", base=await dest.read_current()
    )
    with pytest.raises(ConflictError, match="written concurrently"):
        await dest.promote(staged, Secret(NEW))
    assert aws.consumer_read(path) == {"api_key": "r"}
    stages = aws.stages(path)
    assert stages[racer[0]] == ["AWSCURRENT"]
    assert stages.get(rid, []) == []
    assert await dest.roll_back(staged) is False
    assert aws.consumer_read(path) == {"api_key": "r"}
