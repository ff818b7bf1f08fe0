"""Choosing an elector from the configuration, and the single-instance elector."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rotator.config import Config, parse_config
from rotator.daemon.control import Health
from rotator.daemon.leader import (
    MIGRATION_LOCK_KEY,
    Elector,
    KubernetesLeaseElector,
    LeadershipLost,
    PostgresElector,
    SoleElector,
    Timing,
    build_elector,
    leader_lock_key,
)
from rotator.errors import ConfigError
from tests.support.electors import Changes, leading

PG_URL = "postgresql+psycopg://rotator:s3cr3t-pw@db.internal:5432/rotator"


def config(state_url: str = "sqlite:///state.db", **leader: Any) -> Config:
    return parse_config(
        {
            "mistral": {
                "admin_key": "admin-key",
                "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce",
            },
            "state": {"url": state_url},
            "leader": leader,
        },
        source="rotator.yaml",
    )


def service_account(tmp_path: Path, *, namespace: str | None = "ops") -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    if namespace is not None:
        (sa / "namespace").write_text(namespace + "\n")
    return sa


def test_auto_is_none_on_sqlite_and_postgres_on_postgresql() -> None:
    """election auto: a sole leader with SQLite state, the advisory lock with PostgreSQL."""
    assert isinstance(build_elector(config(), Health()), SoleElector)
    assert isinstance(build_elector(config(PG_URL), Health()), PostgresElector)
    assert isinstance(build_elector(config(PG_URL, election="none"), Health()), SoleElector)


def test_postgres_election_needs_postgresql_state() -> None:
    """election postgres with SQLite state is a configuration error naming the field."""
    with pytest.raises(ConfigError, match=r"^rotator.yaml: leader.election: postgres needs"):
        build_elector(config(election="postgres"), Health())


def test_postgres_elector_takes_the_timing_and_never_shows_the_password() -> None:
    """The elector gets the configured periods; its log URL masks the password."""
    elector = build_elector(config(PG_URL, retry_period="5s", lease_duration="20s"), Health())
    assert isinstance(elector, PostgresElector)
    assert elector.timing == Timing(lease_duration=20, renew_deadline=40, retry_period=5)
    assert "s3cr3t-pw" not in elector._safe_url
    assert "***" in elector._safe_url


def test_leader_lock_key_is_stable_per_lease_name_and_not_the_migration_key() -> None:
    """The lock id is a signed 64-bit value derived from the lease name, never the migrators'."""
    key = leader_lock_key("rotator")
    assert key == leader_lock_key("rotator")
    assert key != leader_lock_key("rotator-staging")
    assert key != MIGRATION_LOCK_KEY
    assert -(2**63) <= key < 2**63
    with pytest.raises(ValueError, match="differ from the migrations"):
        PostgresElector(
            "postgresql://x", lock_key=MIGRATION_LOCK_KEY, health=Health(), timing=Timing()
        )


def test_kubernetes_outside_a_cluster_is_a_config_error(tmp_path: Path) -> None:
    """Without KUBERNETES_SERVICE_HOST (or a token file) the Lease cannot be reached: exit 2."""
    sa = service_account(tmp_path)
    with pytest.raises(ConfigError, match=r"leader\.election: kubernetes needs to run in a pod"):
        build_elector(config(election="kubernetes"), Health(), environ={}, service_account_dir=sa)
    with pytest.raises(ConfigError, match="kubernetes needs to run in a pod"):
        build_elector(
            config(election="kubernetes"),
            Health(),
            environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"},
            service_account_dir=tmp_path / "missing",
        )


def test_kubernetes_in_cluster_settings(tmp_path: Path) -> None:
    """In a pod: the API from the service env, the namespace from the file unless configured."""
    sa = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    elector = build_elector(
        config(election="kubernetes", lease_name="rotator-prod"),
        Health(),
        environ=env,
        service_account_dir=sa,
        identity="pod-7",
    )
    assert isinstance(elector, KubernetesLeaseElector)
    assert elector.namespace == "ops"
    assert elector.lease_name == "rotator-prod"
    assert elector.identity == "pod-7"
    assert str(elector._http.base_url) == "https://10.96.0.1:6443"
    assert elector.timing == Timing(lease_duration=60, renew_deadline=40, retry_period=15)
    configured = build_elector(
        config(election="kubernetes", namespace="rotator"),
        Health(),
        environ=env,
        service_account_dir=sa,
    )
    assert isinstance(configured, KubernetesLeaseElector)
    assert configured.namespace == "rotator"
    assert configured.identity != elector.identity


def test_kubernetes_without_a_namespace_is_a_config_error(tmp_path: Path) -> None:
    """No leader.namespace and no namespace file: the error names leader.namespace."""
    sa = service_account(tmp_path, namespace=None)
    with pytest.raises(ConfigError, match=r"leader\.namespace: not given"):
        build_elector(
            config(election="kubernetes"),
            Health(),
            environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            service_account_dir=sa,
        )


async def test_sole_elector_always_leads_until_released() -> None:
    """The single-instance elector leads at once, has no lease to go stale, and stops leading
    only when released."""
    health = Health()
    elector = SoleElector(health=health, timing=Timing(retry_period=0.01))
    changes = Changes()
    task = asyncio.create_task(elector.run(on_change=changes))
    await changes.wait_gained()
    await elector.ensure()
    assert elector.is_leader
    assert leading(health)
    assert health.lease_valid_until is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert changes.seen == [True]
    await elector.release()
    assert changes.seen == [True, False]
    assert not leading(health)
    with pytest.raises(LeadershipLost):
        await elector.ensure()
    await elector.release()
    assert changes.seen == [True, False]


async def test_a_failing_callback_does_not_stop_the_election() -> None:
    """An on_change that raises is logged; leadership and health are still updated."""
    health = Health()
    elector = SoleElector(health=health, timing=Timing(retry_period=0.01))
    changes = Changes()

    def broken(leading: bool) -> None:
        changes(leading)
        raise RuntimeError("metrics exploded")

    task = asyncio.create_task(elector.run(on_change=broken))
    await changes.wait_gained()
    await asyncio.sleep(0.05)  # a few more rounds of the loop
    assert leading(health)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await elector.release()


class Scripted(Elector):
    """An elector whose backend always grants the lock until told it is gone."""

    kind = "scripted"

    def __init__(self, health: Health) -> None:
        super().__init__(health=health, timing=Timing(retry_period=0.01))
        self.gone = False
        self.acquired = 0

    async def acquire(self) -> bool:
        self.acquired += 1
        self._leading = True
        return True

    async def ensure(self) -> None:
        if not self._leading or self.gone:
            raise self._lost("the backend says so")

    async def release(self) -> None:
        self._release_done()


async def test_a_loss_found_by_a_step_ends_the_loop_without_contending_again() -> None:
    """When ensure() before a step finds leadership gone, run() raises LeadershipLost at its
    next round instead of taking leadership again."""
    health = Health()
    elector = Scripted(health)
    changes = Changes()
    task = asyncio.create_task(elector.run(on_change=changes))
    await changes.wait_gained()
    elector.gone = True
    with pytest.raises(LeadershipLost, match="scripted leadership lost: the backend says so"):
        await elector.ensure()
    assert changes.seen == [True, False]
    assert not leading(health)
    elector.gone = False  # the backend would grant it again: a lost leader must not ask
    with pytest.raises(LeadershipLost):
        async with asyncio.timeout(10):
            await task
    assert elector.acquired == 1
    assert changes.seen == [True, False]


async def test_run_returns_after_release() -> None:
    """release() while run() is looping ends the loop normally and reports the change once."""
    health = Health()
    elector = Scripted(health)
    changes = Changes()
    task = asyncio.create_task(elector.run(on_change=changes))
    await changes.wait_gained()
    await elector.release()
    async with asyncio.timeout(10):
        await task
    assert changes.seen == [True, False]
    assert not leading(health)
