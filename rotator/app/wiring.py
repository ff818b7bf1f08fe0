"""Builds an :class:`Engine` from a configuration: the one place backends are wired together.

The composition root: it alone imports the engine and the concrete backends (state store,
Mistral clients, destination registry) together. The faces call :func:`build_engine`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from rotator.app.checks import check_destinations
from rotator.clock import Clock, SystemClock
from rotator.config import Config, Target
from rotator.contracts import Destination, KeyIssuer, OnCall
from rotator.destinations.registry import StoreConnections, build_destination
from rotator.engine.context import AlertHook, Deps
from rotator.engine.engine import Engine
from rotator.errors import ConfigError
from rotator.mistral.admin import MistralAdminClient
from rotator.mistral.factory import admin_client, verifier
from rotator.pool import BlockingPool
from rotator.state import SqlStateStore
from rotator.state.database import StateUrlError

__all__ = ["build_engine", "check_destinations", "check_issuer"]


async def build_engine(
    cfg: Config,
    *,
    clock: Clock | None = None,
    on_alert: AlertHook | None = None,
    on_call: OnCall | None = None,
    before_step: Callable[[], Awaitable[None]] | None = None,
    create_state: bool = True,
) -> Engine:
    """An engine on ``cfg``'s state store (migrated), Mistral clients and destinations.

    ``on_call`` is handed to both Mistral clients and to every destination (the metrics hook,
    see :data:`rotator.contracts.OnCall`): each backend call is reported to it once.
    ``on_alert`` hears the engine's alerts;
    ``before_step`` runs before every journaled step (the daemon's leadership check: it raises
    ``LeadershipLost`` to stop a rotation).

    ``create_state=False`` (the read-only commands): a missing SQLite state file is a
    ``ConfigError`` ("no state at PATH") instead of being created.

    Resolves ``mistral.user_email`` to a user id through the Admin API. Raises ``ConfigError``
    when that user does not exist, or a backend error when the Admin API cannot be reached.
    """
    clock = clock or SystemClock()
    pool = BlockingPool()
    connections = StoreConnections()
    store: SqlStateStore | None = None
    try:
        store = SqlStateStore(  # on its own threads: its waits never hold the SDKs' pool
            cfg.state.url,
            clock=clock,
            create=create_state,
            audit_key=cfg.audit.hmac_key,
        )
        await store.migrate()
    except StateUrlError as exc:  # named as the configuration file's field, like any other
        if store is not None:
            await store.close()
        raise ConfigError(cfg.source, "state.url", exc.problem) from None
    admin = admin_client(cfg.mistral, clock=clock, on_call=on_call)
    user_id = cfg.mistral.user_id or await _resolve_user(cfg, admin)

    def destinations(target: Target) -> Sequence[Destination]:
        return [
            build_destination(
                cfg.stores[d.store],
                d,
                pool=pool,
                clock=clock,
                connections=connections,
                on_call=on_call,
            )
            for d in target.destinations
        ]

    deps = Deps(
        store=store,
        issuer=admin,
        verifier=verifier(cfg.mistral, admin=admin, clock=clock, on_call=on_call),
        clock=clock,
        user_id=user_id,
        destinations=destinations,
        on_alert=on_alert,
        pool=pool,
        before_step=before_step,
    )
    return Engine(cfg, deps)


async def _resolve_user(cfg: Config, admin: MistralAdminClient) -> str:
    email = cfg.mistral.user_email
    user = await admin.find_user(email=email)
    if user is None:
        raise ConfigError(cfg.source, "mistral.user_email", f"no organization member {email!r}")
    return user.uuid


async def check_issuer(cfg: Config) -> KeyIssuer:
    """The Admin API client ``rotator check`` asks (no user lookup, no state)."""
    return admin_client(cfg.mistral)
