"""The whole world a rotation touches, for engine tests: the Mistral stand-in, OpenBao and moto.

A :class:`Stack` makes configurations whose targets write to fresh, unique paths on the session's
real servers, seeds each destination with a working key that rotator did not create (the world
before rotator, with other fields beside it for I6), and plays the consumers and the other actors
with admin identities. :mod:`tests.support.invariants` checks I1-I6 against it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from rotator.config import Config, parse_config
from rotator_dev.standin import StandinHandle
from tests.support.harness import PREFIX, MotoEnv, OpenBaoEnv
from tests.support.servers import AWS_REGION

Backend = Literal["vault", "aws"]
BACKEND_SETS: dict[str, tuple[Backend, ...]] = {
    "vault": ("vault",),
    "aws": ("aws",),
    "both": ("vault", "aws"),
}
OTHER_FIELDS = {"owner": "team-payments", "note": "do not remove"}
"""Fields seeded beside the key in every destination: they must survive every rotation (I6)."""
FIELD = "api_key"


@dataclass(frozen=True)
class TargetSpec:
    """One target of a test configuration and where its destinations live."""

    name: str
    backends: tuple[Backend, ...]
    workspace_id: str
    vault_path: str
    aws_secret_id: str

    @property
    def prefix(self) -> str:
        return f"rotator-{self.name}"


@dataclass
class Stack:
    """The session's stand-in, OpenBao and moto, as one test world."""

    standin: StandinHandle
    openbao: OpenBaoEnv
    moto: MotoEnv
    workdir: Path
    targets: list[TargetSpec] = field(default_factory=list)

    # -- configuration -------------------------------------------------------------------------

    def add_target(self, backends: Sequence[Backend] = ("vault", "aws")) -> TargetSpec:
        """A new target on unique paths in the stand-in's default workspace (not seeded yet)."""
        token = uuid.uuid4().hex[:10]
        spec = TargetSpec(
            name=f"t-{token}",
            backends=tuple(backends),
            workspace_id=self.standin.workspace_id,
            vault_path=f"{PREFIX}/{token}",
            aws_secret_id=f"{PREFIX}/{token}",
        )
        self.targets.append(spec)
        return spec

    def config_dict(
        self, *, state_url: str, policy: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The configuration of every target added so far (YAML-ready)."""
        defaults = {
            "schedule": "every 30d",
            "max_age": "30d",
            "grace": "1h",
            "max_grace": "7d",
            "key_expiration": "45d",
            "activation_timeout": "10s",
            "jitter": "0s",
        }
        defaults.update(policy or {})
        targets = []
        for spec in self.targets:
            dests: list[dict[str, Any]] = []
            if "vault" in spec.backends:
                dests.append({"store": "vault", "path": spec.vault_path, "field": FIELD})
            if "aws" in spec.backends:
                dests.append({"store": "aws", "secret_id": spec.aws_secret_id, "field": FIELD})
            targets.append(
                {
                    "name": spec.name,
                    "workspace_id": spec.workspace_id,
                    "adopt_existing": True,
                    "destinations": dests,
                }
            )
        return {
            "mistral": {
                "admin_url": self.standin.url,
                "api_url": self.standin.url,
                "admin_key": self.standin.admin_key,
                "user_id": self.standin.user_id,
                "timeout": "5s",
            },
            "state": {"url": state_url},
            "stores": {
                "vault": {
                    "type": "vault",
                    "url": self.openbao.url,
                    "auth": {"method": "token", "token": self.openbao.rotator_token},
                    "timeout": "5s",
                },
                "aws": {
                    "type": "aws_secrets_manager",
                    "region": AWS_REGION,
                    "endpoint_url": self.moto.url,
                    "timeout": "5s",
                },
            },
            "defaults": defaults,
            "engine": {"concurrency": 4},
            "targets": targets,
        }

    def config(self, *, state_url: str, policy: Mapping[str, Any] | None = None) -> Config:
        return parse_config(self.config_dict(state_url=state_url, policy=policy), source="test")

    def write_config(
        self, path: Path, *, state_url: str, policy: Mapping[str, Any] | None = None
    ) -> Path:
        path.write_text(yaml.safe_dump(self.config_dict(state_url=state_url, policy=policy)))
        return path

    def aws_env(self) -> dict[str, str]:
        """Environment for rotator's process: the IAM identity holding the shipped policy."""
        ident = self.moto.rotator
        return {
            "AWS_ACCESS_KEY_ID": ident.access_key_id,
            "AWS_SECRET_ACCESS_KEY": ident.secret_access_key,
            "AWS_DEFAULT_REGION": AWS_REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    # -- the world before rotator --------------------------------------------------------------

    def seed(self, spec: TargetSpec) -> str:
        """Create a working key by hand (as an operator did before rotator) and write it, with
        :data:`OTHER_FIELDS`, to every destination of ``spec``. Returns the key id."""
        with self._admin() as admin:
            answer = admin.post(
                "/v1/admin/api-keys",
                json={
                    "workspace_uuid": spec.workspace_id,
                    "user_id": self.standin.user_id,
                    "name": f"legacy-{spec.name}",
                },
            )
            answer.raise_for_status()
            created = answer.json()
        data = {**OTHER_FIELDS, FIELD: created["key"]}
        if "vault" in spec.backends:
            self.openbao.root().secrets.kv.v2.create_or_update_secret(
                path=spec.vault_path, secret=data, mount_point="secret"
            )
        if "aws" in spec.backends:
            self.moto.admin_client().create_secret(
                Name=spec.aws_secret_id, SecretString=json.dumps(data)
            )
        return str(created["key_id"])

    def _admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.standin.url,
            headers={"Authorization": f"Bearer {self.standin.admin_key}"},
            timeout=10,
        )

    # -- what consumers see --------------------------------------------------------------------

    def consumer_reads(self, spec: TargetSpec) -> Iterator[tuple[str, dict[str, str] | None]]:
        """(destination, its whole data) read the way consumers read, for every destination:
        Vault's latest version; AWS's plain GetSecretValue (no stage, no version)."""
        if "vault" in spec.backends:
            yield f"vault:{spec.vault_path}", self.vault_data(spec)
        if "aws" in spec.backends:
            yield f"aws:{spec.aws_secret_id}", self.aws_data(spec)

    def vault_data(self, spec: TargetSpec) -> dict[str, str] | None:
        try:
            answer = self.openbao.root().secrets.kv.v2.read_secret_version(
                path=spec.vault_path, mount_point="secret", raise_on_deleted_version=True
            )
        except Exception:
            return None
        return {str(k): str(v) for k, v in answer["data"]["data"].items()}

    def aws_data(self, spec: TargetSpec) -> dict[str, str] | None:
        try:
            answer = self.moto.admin_client().get_secret_value(SecretId=spec.aws_secret_id)
        except Exception:
            return None
        parsed = json.loads(answer["SecretString"])
        return {str(k): str(v) for k, v in parsed.items()}

    def aws_stages(self, spec: TargetSpec) -> dict[str, list[str]]:
        """Version id → its staging labels, for the AWS destination of ``spec``."""
        described = self.moto.admin_client().describe_secret(SecretId=spec.aws_secret_id)
        return {k: list(v) for k, v in described.get("VersionIdsToStages", {}).items()}

    def key_works(self, plaintext: str) -> bool:
        """True when ``GET /v1/models`` accepts the key (what every consumer relies on)."""
        with httpx.Client(base_url=self.standin.url, timeout=10) as client:
            answer = client.get("/v1/models", headers={"Authorization": f"Bearer {plaintext}"})
            return answer.status_code == 200
