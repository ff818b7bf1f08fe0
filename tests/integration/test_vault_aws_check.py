"""``rotator check`` for stores and destinations, from a parsed config, on OpenBao and moto."""

from __future__ import annotations

import pytest

from rotator.app.wiring import check_destinations
from rotator.config import Config, parse_config
from tests.support.harness import AwsHarness, VaultHarness
from tests.support.servers import AWS_REGION

pytestmark = pytest.mark.integration

OLD = "0ldKeyAAAAAAAAAAAAAAAAAAAAAAAAAA"


@pytest.fixture
def aws_env(aws: AwsHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default AWS chain resolves to the rotator IAM user (environment only)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.env.rotator.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.env.rotator.secret_access_key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/rotator-test")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/rotator-test")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def config(vault: VaultHarness, aws: AwsHarness, vault_path: str, aws_path: str) -> Config:
    return parse_config(
        {
            "mistral": {
                "admin_key": "standin-admin-key",
                "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce",
            },
            "stores": {
                "bao": {
                    "type": "vault",
                    "url": vault.env.url,
                    "auth": {"method": "token", "token": vault.env.rotator_token},
                },
                "moto": {
                    "type": "aws_secrets_manager",
                    "region": AWS_REGION,
                    "endpoint_url": aws.env.url,
                },
                "spare": {
                    "type": "aws_secrets_manager",
                    "region": AWS_REGION,
                    "endpoint_url": aws.env.url,
                },
            },
            "targets": [
                {
                    "name": "prod",
                    "workspace_id": "019b2bd7-96e7-7219-8c0b-45a73da50088",
                    "destinations": [
                        {"store": "bao", "path": vault_path, "field": "api_key"},
                        {"store": "moto", "secret_id": aws_path, "field": "api_key"},
                    ],
                }
            ],
        },
        env={},
    )


@pytest.mark.usefixtures("aws_env")
async def test_every_destination_passes_with_the_shipped_policies(
    vault: VaultHarness, aws: AwsHarness
) -> None:
    """Login, read and write checks pass for both destinations; an unused store is named."""
    vault_path, aws_path = vault.new_path(), aws.new_path()
    vault.seed(vault_path, {"api_key": OLD})
    aws.seed(aws_path, {"api_key": OLD})
    results = await check_destinations(config(vault, aws, vault_path, aws_path))
    assert all(r.ok for r in results), [(r.subject, r.detail) for r in results]
    details = [f"{r.subject} {r.detail}" for r in results]
    assert any(d.startswith(f"target prod bao:secret/{vault_path}#api_key login:") for d in details)
    assert any(d.startswith(f"target prod moto:{aws_path}#api_key write:") for d in details)
    assert details[-1] == "store spare not used by any destination; not checked"
    assert vault.consumer_read(vault_path) == {"api_key": OLD}
    assert aws.consumer_read(aws_path) == {"api_key": OLD}


@pytest.mark.usefixtures("aws_env")
async def test_missing_secrets_are_one_failed_line_each(
    vault: VaultHarness, aws: AwsHarness
) -> None:
    """A destination whose secret does not exist (create_missing off) fails one clear line."""
    results = await check_destinations(config(vault, aws, vault.new_path(), aws.new_path()))
    failed = [r for r in results if not r.ok]
    assert [r.detail for r in failed] == [
        "read: the secret does not exist and create_missing is off",
        "read: the secret does not exist and create_missing is off",
    ]
