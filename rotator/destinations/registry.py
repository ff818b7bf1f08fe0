"""Which implementation serves which store ``type:`` — the one place a new backend is added.

A backend is one module with a
``from_config(store, destination, *, pool, clock, connections, on_call)`` function and one config
model; registering its ``type`` here is the only other change.
"""

from __future__ import annotations

from typing import Any, Protocol

from rotator.clock import Clock
from rotator.contracts import Destination, OnCall
from rotator.destinations._common import StoreConnections
from rotator.destinations.aws import destination as aws
from rotator.destinations.vault import destination as vault
from rotator.errors import ConfigError
from rotator.pool import BlockingPool

__all__ = ["DestinationFactory", "StoreConnections", "build_destination", "register", "store_types"]


class DestinationFactory(Protocol):
    """Builds a destination from its store's and its own configuration."""

    def __call__(
        self,
        store: Any,
        destination: Any,
        /,
        *,
        pool: BlockingPool,
        clock: Clock,
        connections: StoreConnections,
        on_call: OnCall | None,
    ) -> Destination: ...


_FACTORIES: dict[str, DestinationFactory] = {
    "vault": vault.from_config,
    "aws_secrets_manager": aws.from_config,
}


def register(store_type: str, factory: DestinationFactory) -> None:
    """Serve stores of ``store_type`` with ``factory`` (replacing any previous one)."""
    _FACTORIES[store_type] = factory


def store_types() -> tuple[str, ...]:
    """The store types a destination can be built for."""
    return tuple(sorted(_FACTORIES))


def build_destination(
    store_cfg: Any,
    dest_cfg: Any,
    *,
    pool: BlockingPool,
    clock: Clock,
    connections: StoreConnections | None = None,
    on_call: OnCall | None = None,
) -> Destination:
    """The destination for ``dest_cfg`` on ``store_cfg``, chosen by ``store_cfg.type``.

    Builds clients but makes no network call (logins happen at first use). Pass the same
    ``connections`` for every destination of a configuration so each store connects once, and
    the same ``on_call`` (the metrics hook, :data:`rotator.contracts.OnCall`): a store's
    connection reports its calls to the hook of the destination that made it.
    Raises ``ConfigError`` for a store type no backend serves.
    """
    store_type = getattr(store_cfg, "type", None)
    factory = _FACTORIES.get(store_type) if isinstance(store_type, str) else None
    if factory is None:
        name = getattr(dest_cfg, "store", "?")
        raise ConfigError(
            "config",
            f"stores.{name}.type",
            f"no destination backend for store type {store_type!r} "
            f"(known: {', '.join(store_types())})",
        )
    return factory(
        store_cfg,
        dest_cfg,
        pool=pool,
        clock=clock,
        connections=connections if connections is not None else StoreConnections(),
        on_call=on_call,
    )
