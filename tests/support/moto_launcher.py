"""Start ``moto_server`` with one fix to its Secrets Manager model (moto 5.2.5).

The fix, and why: moto keeps a per-secret ``default_version_id`` and serves it to a plain
``GetSecretValue(SecretId=…)`` — no VersionId, no VersionStage, which is how real consumers read.
``UpdateSecretVersionStage`` moves the AWSCURRENT label but leaves ``default_version_id`` alone,
so after a rotation moto keeps serving the *old* value to consumers, where real AWS serves the
version labelled AWSCURRENT. Tests that read like consumers would then fail on a correct rotator
(or be bent to pass on a wrong one). After every stage update this launcher points
``default_version_id`` at the version that carries AWSCURRENT, which is AWS's behaviour.
``tests/integration/test_aws_moto.py::test_moto_fix_plain_get_serves_the_new_awscurrent`` proves
the fix is in force.

Usage (what the test fixtures run): ``python tests/support/moto_launcher.py -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

from moto.secretsmanager.models import SecretsManagerBackend

_original_update = SecretsManagerBackend.update_secret_version_stage


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


def main(argv: list[str]) -> None:
    """Apply the fix, then run moto's own server entry point with ``argv``."""
    SecretsManagerBackend.update_secret_version_stage = _update_secret_version_stage  # type: ignore[method-assign]
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
