"""A third store kind, ``type: memory``, written as a new kind is (docs/adding-a-destination.md):
its schema, its construction and its ``KIND`` in one module. Its runtime is the dev kit's
in-memory destination. :mod:`tests.unit.test_store_kinds` lists it in the registry of a fresh
interpreter and shows that the configuration, ``rotator check`` and the registry take it.

Importing this module must not import :mod:`rotator.config`: the configuration reads the registry
once, when it is first imported.
"""

from __future__ import annotations

from typing import Literal

from rotator.clock import Clock
from rotator.contracts import Destination, OnCall
from rotator.destinations._common import StoreConnections
from rotator.destinations.kind import DestinationSettings, Place, StoreKind, StoreSettings
from rotator.fields import Text
from rotator.pool import BlockingPool


class MemoryStoreSettings(StoreSettings):
    """An in-memory store; ``pending``: whether it keeps a pending version, as AWS does."""

    type: Literal["memory"]
    pending: bool = True


class MemoryDestinationSettings(DestinationSettings):
    """A value at ``path`` in a memory store, whole or one JSON ``field`` of it."""

    path: Text
    field: Text | None = None

    def place(self) -> Place:
        return Place(
            (self.store, self.path),
            f"store {self.store!r}, path {self.path!r}",
            "one path holds one key",
        )


def from_config(
    store: MemoryStoreSettings,
    destination: MemoryDestinationSettings,
    *,
    pool: BlockingPool,
    clock: Clock,
    connections: StoreConnections,
    on_call: OnCall | None = None,
) -> Destination:
    """A memory destination; its store is made once per configuration (a "connect" call that
    ``on_call`` hears)."""
    from rotator_dev.memory import MemoryDestination, MemoryStore

    def connect() -> MemoryStore:
        if on_call is not None:
            on_call("memory", "connect", "ok", 0.0)
        return MemoryStore(pending=store.pending)

    return MemoryDestination(
        connections.get(destination.store, connect),
        path=destination.path,
        field=destination.field,
        name=destination.store,
    )


KIND = StoreKind(
    type="memory",
    store=MemoryStoreSettings,
    destination=MemoryDestinationSettings,
    build=from_config,
    a_store="a memory",
    destinations="memory destinations",
    a_destination="a memory destination",
)
