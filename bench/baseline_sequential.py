"""The baseline: a minimal, careful, sequential rotation script with the libraries rotator uses.

For each target in turn: create a key (httpx), wait until ``GET /v1/models`` accepts it, stage it
in AWS (boto3 ``PutSecretValue`` labelled AWSPENDING), read it back by version and check it,
move AWSCURRENT to it (``RemoveFromVersionId`` = the old version) and drop AWSPENDING, write it
to Vault with check-and-set (hvac), read it back and check it, then delete the old key. Other
fields of both secrets are kept. One persistent client per backend (keep-alive), no journal, no
locks, no retries: what an operator's script would do, done efficiently.

Usage: ``python bench/baseline_sequential.py SPEC.json`` where the spec (written by
``bench/fleet.py``) names the servers and the targets. Prints one JSON line: the number of
targets rotated and the calls made per backend.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import httpx
import hvac

CURRENT, PENDING = "AWSCURRENT", "AWSPENDING"


class Baseline:
    """The clients and the call counts of one run."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.calls: Counter[str] = Counter()
        self.mistral = httpx.Client(base_url=spec["standin_url"], timeout=30)
        self.admin_headers = {"Authorization": f"Bearer {spec['admin_key']}"}
        self.vault = hvac.Client(url=spec["vault_url"], token=spec["vault_token"])
        self.aws = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=spec["aws_region"],
        ).client("secretsmanager", endpoint_url=spec["aws_url"])

    def works(self, key: str) -> bool:
        self.calls["mistral"] += 1
        answer = self.mistral.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        return answer.status_code == 200

    def wait_active(self, key: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.works(key):
            if time.monotonic() > deadline:
                raise RuntimeError("the new key never became active")
            time.sleep(0.1)

    def rotate(self, target: dict[str, str]) -> None:
        name, path, field = target["name"], target["path"], self.spec["field"]
        self.calls["mistral"] += 1
        created = self.mistral.post(
            "/v1/admin/api-keys",
            headers=self.admin_headers,
            json={
                "workspace_uuid": self.spec["workspace_id"],
                "user_id": self.spec["user_id"],
                "name": f"baseline-{name}-{uuid.uuid4().hex[:8]}",
            },
        )
        created.raise_for_status()
        key, key_id = created.json()["key"], created.json()["key_id"]
        self.wait_active(key)

        # AWS: stage as AWSPENDING, read back by version, check, promote with a CAS.
        self.calls["aws"] += 1
        current = self.aws.get_secret_value(SecretId=path)
        document = json.loads(current["SecretString"]) | {field: key}
        self.calls["aws"] += 1
        staged = self.aws.put_secret_value(
            SecretId=path,
            ClientRequestToken=str(uuid.uuid4()),
            SecretString=json.dumps(document),
            VersionStages=[PENDING],
        )
        self.calls["aws"] += 1
        back = self.aws.get_secret_value(SecretId=path, VersionId=staged["VersionId"])
        if json.loads(back["SecretString"])[field] != key or not self.works(key):
            raise RuntimeError(f"{path}: AWS read-back failed")
        self.calls["aws"] += 2
        self.aws.update_secret_version_stage(
            SecretId=path,
            VersionStage=CURRENT,
            MoveToVersionId=staged["VersionId"],
            RemoveFromVersionId=current["VersionId"],
        )
        self.aws.update_secret_version_stage(
            SecretId=path, VersionStage=PENDING, RemoveFromVersionId=staged["VersionId"]
        )

        # Vault: read the version, write with check-and-set, read back, check.
        self.calls["vault"] += 1
        latest = self.vault.secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )
        data = latest["data"]["data"] | {field: key}
        self.calls["vault"] += 1
        self.vault.secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, cas=latest["data"]["metadata"]["version"], mount_point="secret"
        )
        self.calls["vault"] += 1
        served = self.vault.secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )
        if served["data"]["data"][field] != key or not self.works(key):
            raise RuntimeError(f"{path}: Vault read-back failed")

        # Both serve the new key: the old one goes.
        self.calls["mistral"] += 1
        self.mistral.delete(
            f"/v1/admin/api-keys/{target['key_id']}", headers=self.admin_headers
        ).raise_for_status()
        target["key_id"] = key_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="the JSON spec written by bench/fleet.py")
    spec = json.loads(parser.parse_args().spec.read_text())
    baseline = Baseline(spec)
    for target in spec["targets"]:
        baseline.rotate(target)
    print(json.dumps({"rotated": len(spec["targets"]), "calls": dict(baseline.calls)}))


if __name__ == "__main__":
    main()
