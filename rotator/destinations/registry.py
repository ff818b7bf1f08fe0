"""Which implementation serves which store ``type:`` — the one place a new backend is added.

A backend is one module with a ``from_config(store, destination, *, pool, clock, connections)``
function and one config model; registering its ``type`` here is the only other change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from rotator.clock import Clock
from rotator.contracts import Destination
from rotator.destinations import aws, vault
from rotator.errors import ConfigError
from rotator.pool import BlockingPool

T = TypeVar("T")


class StoreConnections:
    """One connection per store (a logged-in Vault session, a boto3 client), shared by every
    destination of that store so a store logs in once. Thread-safe."""

    def __init__(self) -> None:
        self._by_store: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, store: str, connect: Callable[[], T]) -> T:
        """The connection of ``store``, made with ``connect()`` the first time."""
        with self._lock:
            if store not in self._by_store:
                self._by_store[store] = connect()
            found: T = self._by_store[store]  # type: ignore[assignment]
            return found


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
) -> Destination:
    """The destination for ``dest_cfg`` on ``store_cfg``, chosen by ``store_cfg.type``.

    Builds clients but makes no network call (logins happen at first use). Pass the same
    ``connections`` for every destination of a configuration so each store connects once.
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
    )
