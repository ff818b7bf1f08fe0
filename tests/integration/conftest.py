"""Integration fixtures: a real OpenBao dev server and a real (fixed) moto server on loopback."""

from __future__ import annotations

import pytest

from rotator.pool import BlockingPool
from tests.support.harness import AwsHarness, MotoEnv, OpenBaoEnv, VaultHarness


@pytest.fixture
def vault(openbao: OpenBaoEnv, blocking_pool: BlockingPool) -> VaultHarness:
    """Destinations on the session's OpenBao under rotator's policy, plus admin actions."""
    return VaultHarness(openbao, blocking_pool)


@pytest.fixture
def aws(moto: MotoEnv, blocking_pool: BlockingPool) -> AwsHarness:
    """Destinations on the session's moto as the IAM user holding rotator's policy."""
    return AwsHarness(moto, blocking_pool)
