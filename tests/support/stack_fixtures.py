"""Fixtures for engine tests: the whole stack, a state URL and rotator's AWS identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator_dev.standin import StandinHandle
from tests.support.harness import MotoEnv, OpenBaoEnv
from tests.support.invariants import InvariantChecker
from tests.support.stack import Stack


@pytest.fixture
def stack(
    standin: StandinHandle,
    openbao: OpenBaoEnv,
    moto: MotoEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Stack:
    """The stand-in (reset), OpenBao and moto; rotator acts as the IAM user with its policy."""
    world = Stack(standin=standin, openbao=openbao, moto=moto, workdir=tmp_path)
    for name, value in world.aws_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return world


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    """A fresh SQLite state database for the test."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def checker(stack: Stack, state_url: str) -> InvariantChecker:
    """The independent I1-I6 checker on this test's stack and state database."""
    return InvariantChecker(stack, state_url)
