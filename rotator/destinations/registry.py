"""The store kinds rotator writes keys to: the one place a kind is added.

Each kind is a package under ``rotator/destinations/`` whose ``KIND``
(:class:`~rotator.destinations.kind.StoreKind`) holds its ``type:``, its configuration schemas,
how messages name it and its construction. :data:`KINDS` lists them: the configuration
(:mod:`rotator.config`) accepts exactly these kinds in ``stores:`` and destinations, and
:func:`build_destination` builds them. docs/adding-a-destination.md lists what else a new kind
brings (its tests, its rows in docs/configuration.md).
"""

from __future__ import annotations

from typing import Any

from rotator.clock import Clock
from rotator.contracts import Destination, OnCall
from rotator.destinations import aws, vault
from rotator.destinations._common import StoreConnections
from rotator.destinations.kind import StoreKind
from rotator.errors import ConfigError
from rotator.pool import BlockingPool

__all__ = ["KINDS", "StoreConnections", "build_destination", "kind_of", "store_types"]

KINDS: tuple[StoreKind, ...] = (
    vault.KIND,
    aws.KIND,
)
"""Every store kind, in the order messages list them (``must be vault or aws_secrets_manager``)."""


def kind_of(store_type: object) -> StoreKind | None:
    """The kind whose ``type:`` is ``store_type``, or None."""
    return next((kind for kind in KINDS if kind.type == store_type), None)


def store_types() -> tuple[str, ...]:
    """The store types a destination can be built for, sorted."""
    return tuple(sorted(kind.type for kind in KINDS))


def build_destination(
    store_cfg: Any,
    dest_cfg: Any,
    *,
    pool: BlockingPool,
    clock: Clock,
    connections: StoreConnections | None = None,
    on_call: OnCall | None = None,
) -> Destination:
    """The destination for ``dest_cfg`` on ``store_cfg``, built by the kind ``store_cfg.type``
    names.

    Builds clients but makes no network call (logins happen at first use). Pass the same
    ``connections`` for every destination of a configuration so each store connects once, and
    the same ``on_call`` (the metrics hook, :data:`rotator.contracts.OnCall`): a store's
    connection reports its calls to the hook of the destination that made it.
    Raises ``ConfigError`` for a store type no kind serves.
    """
    kind = kind_of(getattr(store_cfg, "type", None))
    if kind is None:
        name = getattr(dest_cfg, "store", "?")
        raise ConfigError(
            "config",
            f"stores.{name}.type",
            f"no destination backend for store type {getattr(store_cfg, 'type', None)!r} "
            f"(known: {', '.join(store_types())})",
        )
    return kind.build(
        store_cfg,
        dest_cfg,
        pool=pool,
        clock=clock,
        connections=connections if connections is not None else StoreConnections(),
        on_call=on_call,
    )
