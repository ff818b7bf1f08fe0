"""Destination harnesses: one per backend, the same face for the contract suite.

A harness builds destinations on fresh, unique paths (so tests share one server per session
without seeing each other) and plays the *other* actors with its own admin identity: an operator
who seeds a secret, a concurrent writer, another manager, someone else's rotation (AWSPENDING), a
consumer reading the way consumers do. The rotator identity it hands to destinations holds only
the shipped policy (``deploy/policies``); the admin identity is never given to a destination.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import boto3
import hvac

from rotator.clock import SystemClock
from rotator.contracts import Destination
from rotator.destinations.aws.api import Boto3SecretsManager
from rotator.destinations.aws.destination import AwsDestination
from rotator.destinations.registry import StoreConnections, build_destination
from rotator.destinations.vault.api import HvacApi
from rotator.destinations.vault.auth import StaticToken, VaultSession
from rotator.destinations.vault.destination import VaultDestination
from rotator.destinations.vault.schema import TokenAuth, VaultStore
from rotator.destinations.vault.schema import VaultDestination as VaultDestinationConfig
from rotator.pool import BlockingPool
from rotator.secret import Secret
from rotator_dev.memory import MemoryDestination, MemoryStore
from tests.support.servers import AWS_REGION, HOST, ROOT_TOKEN, free_port

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

REPO = Path(__file__).resolve().parents[2]
VAULT_POLICY = REPO / "deploy" / "policies" / "rotator-vault-policy.hcl"
IAM_POLICY = REPO / "deploy" / "policies" / "rotator-iam-policy.json"
PREFIX = "mistral/contract"
"""Every test secret lives under this prefix, which the shipped policies cover."""

Data = dict[str, str]


class Harness(Protocol):
    """What the contract suite needs from a backend."""

    backend: str
    pending: bool
    """Staging writes a version consumers do not see (AWS, memory-pending)."""
    stamps_marks: bool
    """Promotion records key_id/rotation_id/fingerprint on the secret (Vault, memory-direct)."""

    def new_path(self) -> str: ...

    def destination(
        self, path: str, *, field: str | None = "api_key", create_missing: bool = False
    ) -> Destination: ...

    def denied_destination(self, path: str) -> Destination:
        """The same secret seen by an identity that may read but not write it."""
        ...

    def down_destination(self, path: str) -> Destination:
        """The same secret on a server that does not answer."""
        ...

    def seed(self, path: str, data: Mapping[str, str]) -> None:
        """Someone else writes ``data`` as the current value (creating the secret if needed)."""
        ...

    def consumer_read(self, path: str) -> Data | None:
        """What a consumer reads now, decoded; None if there is nothing to read."""
        ...

    def mark_foreign(self, path: str, manager: str) -> None: ...

    def stage_foreign(self, path: str, data: Mapping[str, str]) -> None:
        """Someone else stages a pending version (pending backends only)."""
        ...

    def version_count(self, path: str) -> int: ...


def _unique() -> str:
    return f"{PREFIX}/{uuid.uuid4().hex[:12]}"


# -- memory ------------------------------------------------------------------------------------


@dataclass
class MemoryHarness:
    """The in-memory reference, AWS-like (``pending``) or Vault-like."""

    pending: bool
    store: MemoryStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = MemoryStore(pending=self.pending)
        self.backend = "memory-pending" if self.pending else "memory-direct"
        self.stamps_marks = not self.pending

    def new_path(self) -> str:
        return _unique()

    def destination(
        self, path: str, *, field: str | None = "api_key", create_missing: bool = False
    ) -> Destination:
        return MemoryDestination(self.store, path=path, field=field, create_missing=create_missing)

    def denied_destination(self, path: str) -> Destination:
        self.store.denied.add(path)
        return self.destination(path)

    def down_destination(self, path: str) -> Destination:
        down = MemoryStore(pending=self.pending)
        down.down = True
        return MemoryDestination(down, path=path, field="api_key")

    def seed(self, path: str, data: Mapping[str, str]) -> None:
        self.store.write(path, data)

    def consumer_read(self, path: str) -> Data | None:
        return self.store.consumer_read(path)

    def mark_foreign(self, path: str, manager: str) -> None:
        self.store.set_marks(path, {"managed-by": manager})

    def stage_foreign(self, path: str, data: Mapping[str, str]) -> None:
        self.store.stage_foreign(path, data)

    def version_count(self, path: str) -> int:
        return self.store.version_count(path)


# -- OpenBao -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenBaoEnv:
    """A running OpenBao dev server with rotator's policy loaded and tokens to use it."""

    url: str
    rotator_token: str
    """Holds only deploy/policies/rotator-vault-policy.hcl (no default policy)."""
    read_only_token: str
    """May read the test secrets but not write them."""
    default_only_token: str
    """Holds only Vault's default policy: none of rotator's paths."""
    role_id: str
    secret_id: str
    """An AppRole whose tokens carry rotator's policy."""

    def root(self) -> hvac.Client:
        return hvac.Client(url=self.url, token=ROOT_TOKEN, timeout=10)

    @classmethod
    def prepare(cls, url: str) -> OpenBaoEnv:
        """Load the policies, mint the tokens and the AppRole (as root)."""
        root = hvac.Client(url=url, token=ROOT_TOKEN, timeout=10)
        root.sys.create_or_update_policy("rotator", VAULT_POLICY.read_text())
        root.sys.create_or_update_policy(
            "rotator-read-only",
            'path "secret/data/mistral/*" { capabilities = ["read"] }\n'
            'path "sys/capabilities-self" { capabilities = ["update"] }\n'
            'path "auth/token/lookup-self" { capabilities = ["read"] }\n',
        )

        def token(policies: list[str], *, no_default: bool) -> str:
            answer = root.auth.token.create(
                policies=policies, no_default_policy=no_default, ttl="2h", renewable=True
            )
            return str(answer["auth"]["client_token"])

        root.sys.enable_auth_method("approle")
        root.auth.approle.create_or_update_approle(
            "rotator", token_policies=["rotator"], token_ttl="1h", token_no_default_policy=True
        )
        role_id = root.auth.approle.read_role_id("rotator")["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id("rotator")["data"]["secret_id"]
        return cls(
            url=url,
            rotator_token=token(["rotator"], no_default=True),
            read_only_token=token(["rotator-read-only"], no_default=True),
            default_only_token=token(["default"], no_default=False),
            role_id=str(role_id),
            secret_id=str(secret_id),
        )


@dataclass
class VaultHarness:
    """Destinations on the session's OpenBao, built through the registry from config models."""

    env: OpenBaoEnv
    pool: BlockingPool
    token: str = ""
    backend: str = "openbao"
    pending: bool = False
    stamps_marks: bool = True

    def __post_init__(self) -> None:
        self.token = self.token or self.env.rotator_token
        self._root = self.env.root()

    def new_path(self) -> str:
        return _unique()

    def store_config(self, *, url: str | None = None, token: str | None = None) -> VaultStore:
        return VaultStore(
            type="vault",
            url=url or self.env.url,
            auth=TokenAuth(method="token", token=Secret(token or self.token)),
            timeout=timedelta(seconds=5),
        )

    def destination(
        self, path: str, *, field: str | None = "api_key", create_missing: bool = False
    ) -> Destination:
        return self._build(path, field or "api_key", create_missing, self.store_config())

    def _build(self, path: str, field: str, create_missing: bool, store: VaultStore) -> Destination:
        config = VaultDestinationConfig(
            store="bao", path=path, field=field, create_missing=create_missing
        )
        return build_destination(
            store, config, pool=self.pool, clock=SystemClock(), connections=StoreConnections()
        )

    def destination_with_token(self, path: str, token: str) -> VaultDestination:
        session = VaultSession(
            HvacApi.connect(self.env.url, timeout=5), StaticToken(Secret(token)), SystemClock()
        )
        return VaultDestination(
            session=session, pool=self.pool, store="bao", mount="secret", path=path, field="api_key"
        )

    def denied_destination(self, path: str) -> Destination:
        return self.destination_with_token(path, self.env.read_only_token)

    def down_destination(self, path: str) -> Destination:
        url = f"http://{HOST}:{free_port()}"
        return self._build(path, "api_key", False, self.store_config(url=url))

    def seed(self, path: str, data: Mapping[str, str]) -> None:
        self._root.secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(data), mount_point="secret"
        )

    def consumer_read(self, path: str) -> Data | None:
        try:
            answer = self._root.secrets.kv.v2.read_secret_version(
                path=path, mount_point="secret", raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        return {str(k): str(v) for k, v in (answer["data"]["data"] or {}).items()}

    def mark_foreign(self, path: str, manager: str) -> None:
        self._root.adapter.post(
            f"/v1/secret/metadata/{path}", json={"custom_metadata": {"managed-by": manager}}
        )

    def stage_foreign(self, path: str, data: Mapping[str, str]) -> None:
        raise NotImplementedError("Vault KV v2 has no pending state")

    def version_count(self, path: str) -> int:
        try:
            answer = self._root.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")
        except hvac.exceptions.InvalidPath:
            return 0
        return len(answer["data"]["versions"])


# -- moto --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsIdentity:
    """An IAM user's access key on the moto server."""

    name: str
    access_key_id: str
    secret_access_key: str

    def session(self) -> boto3.session.Session:
        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=AWS_REGION,
        )


IAM_ACTIONS = (
    "DescribeSecret",
    "GetSecretValue",
    "PutSecretValue",
    "UpdateSecretVersionStage",
    "CreateSecret",
)
"""The Secrets Manager actions rotator calls; each has a user whose policy lacks only it."""


def iam_policy_for_moto(*, without: str | None = None) -> str:
    """The shipped IAM policy as moto can enforce it: moto authorizes Secrets Manager calls
    against resource ``*`` (it derives no secret ARN), so each ``Resource`` becomes ``*``;
    ``without`` drops one action to prove it is needed."""
    document = json.loads(IAM_POLICY.read_text())
    for statement in document["Statement"]:
        statement["Resource"] = "*"
        statement["Action"] = [a for a in statement["Action"] if a != f"secretsmanager:{without}"]
    return json.dumps(document)


@dataclass(frozen=True)
class MotoEnv:
    """A running moto server enforcing IAM, with the users the tests act as."""

    url: str
    admin: AwsIdentity
    rotator: AwsIdentity
    lacking: Mapping[str, AwsIdentity]
    """Per action in :data:`IAM_ACTIONS`: a user holding the policy without that action."""

    SETUP_REQUESTS = 3 * (2 + len(IAM_ACTIONS))
    """Unchecked requests the set-up makes: 3 per user (create, put policy, create key)."""

    @classmethod
    def prepare(cls, url: str) -> MotoEnv:
        """Create the users with the first, unchecked requests."""
        iam = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=AWS_REGION
        ).client("iam", endpoint_url=url)

        def user(name: str, policy: str) -> AwsIdentity:
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName="rotator", PolicyDocument=policy)
            key = iam.create_access_key(UserName=name)["AccessKey"]
            return AwsIdentity(name, key["AccessKeyId"], key["SecretAccessKey"])

        admin_policy = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        )
        admin = user("harness-admin", admin_policy)
        rotator = user("rotator", iam_policy_for_moto())
        lacking = {a: user(f"rotator-no-{a}", iam_policy_for_moto(without=a)) for a in IAM_ACTIONS}
        return cls(url=url, admin=admin, rotator=rotator, lacking=lacking)

    def client(self, identity: AwsIdentity, *, url: str | None = None) -> Boto3SecretsManager:
        return Boto3SecretsManager.connect(
            region=AWS_REGION, endpoint_url=url or self.url, timeout=5, session=identity.session()
        )

    def admin_client(self) -> SecretsManagerClient:
        return self.admin.session().client("secretsmanager", endpoint_url=self.url)


@dataclass
class AwsHarness:
    """Destinations on the session's moto, acting as the IAM user holding rotator's policy."""

    env: MotoEnv
    pool: BlockingPool
    backend: str = "moto"
    pending: bool = True
    stamps_marks: bool = False

    def __post_init__(self) -> None:
        self._admin = self.env.admin_client()

    def new_path(self) -> str:
        return _unique()

    def destination(
        self, path: str, *, field: str | None = "api_key", create_missing: bool = False
    ) -> Destination:
        return self.destination_as(
            self.env.rotator, path, field=field, create_missing=create_missing
        )

    def destination_as(
        self,
        identity: AwsIdentity,
        path: str,
        *,
        field: str | None = "api_key",
        create_missing: bool = False,
        url: str | None = None,
    ) -> AwsDestination:
        return AwsDestination(
            api=self.env.client(identity, url=url),
            pool=self.pool,
            store="moto",
            secret_id=path,
            field=field,
            create_missing=create_missing,
        )

    def denied_destination(self, path: str) -> Destination:
        return self.destination_as(self.env.lacking["PutSecretValue"], path)

    def down_destination(self, path: str) -> Destination:
        return self.destination_as(self.env.rotator, path, url=f"http://{HOST}:{free_port()}")

    def seed(self, path: str, data: Mapping[str, str]) -> None:
        text = json.dumps(dict(data))
        try:
            self._admin.put_secret_value(SecretId=path, SecretString=text)
        except self._admin.exceptions.ResourceNotFoundException:
            self._admin.create_secret(Name=path, SecretString=text)

    def consumer_read(self, path: str) -> Data | None:
        try:
            answer = self._admin.get_secret_value(SecretId=path)
        except self._admin.exceptions.ResourceNotFoundException:
            return None
        decoded = json.loads(answer["SecretString"])
        return {str(k): str(v) for k, v in decoded.items()}

    def mark_foreign(self, path: str, manager: str) -> None:
        self._admin.tag_resource(SecretId=path, Tags=[{"Key": "managed-by", "Value": manager}])

    def stage_foreign(self, path: str, data: Mapping[str, str]) -> None:
        self._admin.put_secret_value(
            SecretId=path, SecretString=json.dumps(dict(data)), VersionStages=["AWSPENDING"]
        )

    def version_count(self, path: str) -> int:
        try:
            answer = self._admin.list_secret_version_ids(SecretId=path, IncludeDeprecated=True)
        except self._admin.exceptions.ResourceNotFoundException:
            return 0
        return len(answer["Versions"])

    def stages(self, path: str) -> dict[str, list[str]]:
        """Version id → labels, as DescribeSecret reports them."""
        answer = self._admin.describe_secret(SecretId=path)
        return {k: list(v) for k, v in answer.get("VersionIdsToStages", {}).items()}
