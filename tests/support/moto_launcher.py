"""Start ``moto_server`` with two fixes to its Secrets Manager model (moto 5.2.5).

The first fix, and why: moto keeps a per-secret ``default_version_id`` and serves it to a plain
``GetSecretValue(SecretId=…)`` — no VersionId, no VersionStage, which is how real consumers read.
``UpdateSecretVersionStage`` moves the AWSCURRENT label but leaves ``default_version_id`` alone,
so after a rotation moto keeps serving the *old* value to consumers, where real AWS serves the
version labelled AWSCURRENT. Tests that read like consumers would then fail on a correct rotator
(or be bent to pass on a wrong one). After every stage update this launcher points
``default_version_id`` at the version that carries AWSCURRENT, which is AWS's behaviour.
``tests/integration/test_aws_moto.py::test_moto_fix_plain_get_serves_the_new_awscurrent`` proves
the fix is in force.

The second: a ``PutSecretValue`` whose ``ClientRequestToken`` names a version that carries
AWSPENDING *replaces* that version's value in moto (its shortcut for rotation Lambdas), where
AWS never modifies a version: the same value is ignored (the put is idempotent), another value
is refused with ``ResourceExistsException``. rotator's staging relies on that (one pending
version per rotation id, bound to its value). Before such a put this launcher applies AWS's
rule; ``test_moto_fix_a_token_stays_bound_to_its_pending_value`` proves it.

Usage (what the test fixtures run): ``python tests/support/moto_launcher.py -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

from moto.secretsmanager.exceptions import ResourceExistsException
from moto.secretsmanager.models import SecretsManagerBackend

_original_update = SecretsManagerBackend.update_secret_version_stage
_original_put = SecretsManagerBackend.put_secret_value


def _update_secret_version_stage(
    self: SecretsManagerBackend,
    secret_id: str,
    version_stage: str,
    remove_from_version_id: str,
    move_to_version_id: str,
) -> tuple[str, str]:
    result = _original_update(
        self, secret_id, version_stage, remove_from_version_id, move_to_version_id
    )
    secret: Any = self.secrets[secret_id]
    for version_id, version in secret.versions.items():
        if "AWSCURRENT" in version["version_stages"]:
            secret.set_default_version_id(version_id)
            break
    return result


def _put_secret_value(
    self: SecretsManagerBackend,
    secret_id: str,
    secret_string: str,
    secret_binary: str,
    client_request_token: str,
    version_stages: list[str],
) -> str:
    secret: Any = self.secrets.get(secret_id) if self._is_valid_identifier(secret_id) else None
    version = secret.versions.get(client_request_token) if secret is not None else None
    if version is not None and "AWSPENDING" in version.get("version_stages", []):
        same = (version.get("secret_string"), version.get("secret_binary")) == (
            secret_string,
            secret_binary,
        )
        if not same:
            raise ResourceExistsException(
                f"You can't use ClientRequestToken {client_request_token} because that value is"
                f" already in use for a version of secret {secret.arn}."
            )
        return str(
            secret.to_short_dict(include_version_stages=True, version_id=version["version_id"])
        )
    return str(
        _original_put(
            self, secret_id, secret_string, secret_binary, client_request_token, version_stages
        )
    )


def main(argv: list[str]) -> None:
    """Apply the fixes, then run moto's own server entry point with ``argv``."""
    SecretsManagerBackend.update_secret_version_stage = _update_secret_version_stage  # type: ignore[method-assign]
    SecretsManagerBackend.put_secret_value = _put_secret_value  # type: ignore[method-assign]
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
