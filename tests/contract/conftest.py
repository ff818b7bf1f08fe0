"""One parametrised fixture runs the destination contract suite against every backend.

``memory-pending`` and ``memory-direct`` are the in-memory reference (AWS-like and Vault-like);
``openbao`` and ``moto`` are real servers on loopback, acting with identities that hold only the
shipped policies (deploy/policies).
"""

from __future__ import annotations

import pytest

from tests.support.harness import AwsHarness, Harness, MemoryHarness, VaultHarness

BACKENDS = [
    pytest.param("memory-pending", id="memory-pending"),
    pytest.param("memory-direct", id="memory-direct"),
    pytest.param("openbao", id="openbao", marks=pytest.mark.integration),
    pytest.param("moto", id="moto", marks=pytest.mark.integration),
]


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest) -> Harness:
    """A harness for one backend; each test gets fresh secret paths on it."""
    backend: str = request.param
    if backend == "memory-pending":
        return MemoryHarness(pending=True)
    if backend == "memory-direct":
        return MemoryHarness(pending=False)
    pool = request.getfixturevalue("blocking_pool")
    if backend == "openbao":
        return VaultHarness(request.getfixturevalue("openbao"), pool)
    return AwsHarness(request.getfixturevalue("moto"), pool)
