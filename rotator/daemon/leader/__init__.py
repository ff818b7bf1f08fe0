"""Leadership: which of several ``rotator run`` instances rotates.

One leader rotates and revokes; standbys serve health and metrics and keep trying to take over.
:func:`build_elector` picks the mechanism from ``leader.election``, one module each:

- ``none`` (:class:`SoleElector`, ``sole``): always the leader. One instance (SQLite state),
  or a Deployment with ``strategy: Recreate``.
- ``postgres`` (:class:`PostgresElector`, ``postgres``): a session advisory lock held on a
  dedicated direct connection for the process lifetime; losing the connection loses the lock.
- ``kubernetes`` (:class:`KubernetesLeaseElector`, ``kubernetes``): a ``coordination.k8s.io/v1``
  Lease, renewed with resourceVersion compare-and-swap (cert-manager's 60 s lease / 40 s renew
  deadline / 15 s retry by default).
- ``auto``: ``postgres`` when the state is PostgreSQL, else ``none``.

A lease is not a fence: a leader paused for longer than its lease may act late, after another
instance took over. What keeps that safe is compare-and-swap on every write (Vault ``cas``, AWS
``RemoveFromVersionId`` and ``ClientRequestToken``, one open rotation per target in the state
store), not this package. Leadership only keeps two instances from doing the same work.

What they share (:class:`Timing`, the :class:`Elector` contract and its run loop) is in
``base``; no elector module imports another. How the daemon uses an :class:`Elector`::

    elector = build_elector(cfg, health)
    task = asyncio.create_task(elector.run(on_change=metrics.leader))  # raises LeadershipLost
    ...
    await elector.ensure()   # before each step of a rotation or revocation: raises if lost
    ...
    await elector.release()  # on shutdown, so a standby takes over at once
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path

from rotator.clock import Clock
from rotator.config import Config
from rotator.daemon.control import Health
from rotator.daemon.leader.base import (
    Elector,
    OnChange,
    Timing,
    api_timeout,
    default_identity,
    release_bound,
)
from rotator.daemon.leader.kubernetes import SERVICE_ACCOUNT_DIR, KubernetesLeaseElector
from rotator.daemon.leader.postgres import (
    MIGRATION_LOCK_KEY,
    PostgresElector,
    _conninfo,
    _is_postgres,
    leader_lock_key,
)
from rotator.daemon.leader.sole import SoleElector
from rotator.errors import ConfigError, LeadershipLost


def build_elector(
    cfg: Config,
    health: Health,
    *,
    clock: Clock | None = None,
    identity: str | None = None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Elector:
    """The elector ``cfg.leader`` asks for; connects to nothing yet.

    Raises :class:`ConfigError` when ``postgres`` is asked without PostgreSQL state, or
    ``kubernetes`` outside a cluster (no ``KUBERNETES_SERVICE_HOST`` or service-account token).
    """
    settings = cfg.leader
    timing = Timing(
        lease_duration=settings.lease_duration.total_seconds(),
        renew_deadline=settings.renew_deadline.total_seconds(),
        retry_period=settings.retry_period.total_seconds(),
    )
    election = settings.election
    if election == "auto":
        election = "postgres" if _is_postgres(cfg.state.url) else "none"
    if election == "none":
        return SoleElector(health=health, timing=timing, clock=clock)
    if election == "postgres":
        if not _is_postgres(cfg.state.url):
            raise ConfigError(
                cfg.source, "leader.election", "postgres needs state.url on PostgreSQL"
            )
        return PostgresElector(
            _conninfo(cfg.state.url),
            lock_key=leader_lock_key(settings.lease_name),
            health=health,
            timing=timing,
            clock=clock,
            safe_url=cfg.state.safe_url,
            identity=identity,
        )
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    token = service_account_dir / "token"
    if not host or not token.is_file():
        raise ConfigError(
            cfg.source,
            "leader.election",
            "kubernetes needs to run in a pod (KUBERNETES_SERVICE_HOST and a service-account"
            f" token at {token})",
        )
    namespace = settings.namespace
    if namespace is None:
        ns_file = service_account_dir / "namespace"
        try:
            namespace = ns_file.read_text().strip()
        except OSError:
            namespace = ""
        if not namespace:
            raise ConfigError(cfg.source, "leader.namespace", f"not given and {ns_file} unreadable")
    ca = service_account_dir / "ca.crt"
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca)) if ca.is_file() else True
    )
    bracketed = f"[{host}]" if ":" in host else host
    return KubernetesLeaseElector(
        api_url=f"https://{bracketed}:{port}",
        namespace=namespace,
        lease_name=settings.lease_name,
        identity=identity or default_identity(),
        token_path=token,
        health=health,
        timing=timing,
        verify=verify,
        clock=clock,
    )


__all__ = [
    "MIGRATION_LOCK_KEY",
    "SERVICE_ACCOUNT_DIR",
    "Elector",
    "KubernetesLeaseElector",
    "LeadershipLost",
    "OnChange",
    "PostgresElector",
    "SoleElector",
    "Timing",
    "api_timeout",
    "build_elector",
    "default_identity",
    "leader_lock_key",
    "release_bound",
]
