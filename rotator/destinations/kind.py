"""What a store kind declares: its configuration schemas, how messages name it, how it is built.

A store kind is one package under ``rotator/destinations/`` (``vault/``, ``aws/``) whose
``__init__`` defines ``KIND``, a :class:`StoreKind`. :mod:`rotator.destinations.registry` lists
the kinds; it is the only other place a kind is named. The configuration (:mod:`rotator.config`)
builds its ``stores:`` and destination schemas from those ``KIND`` records, and the registry
builds destinations with them. docs/adding-a-destination.md walks through adding one.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from rotator.clock import Clock
from rotator.contracts import Destination, OnCall
from rotator.destinations._common import StoreConnections
from rotator.fields import Text, _Model
from rotator.pool import BlockingPool


class StoreSettings(_Model):
    """The base of a kind's ``stores.<name>`` schema. A kind narrows ``type`` to its own
    ``Literal`` value: the configuration tells the kinds apart by it."""

    type: str


class Place(NamedTuple):
    """What two destinations of one configuration must not share, and how messages say so."""

    key: tuple[object, ...]
    """Two destinations whose keys are equal are the same place (the store name comes first)."""
    what: str
    """The place in words, e.g. ``store 'vault-main', path 'mistral/prod', field 'api_key'``."""
    why: str
    """Why it cannot be shared, e.g. ``two destinations cannot share one field``."""


class DestinationSettings(_Model):
    """The base of a kind's destination schema (an item of ``targets[].destinations``):
    ``store`` names a configured store of that kind; the kind adds where in it the key goes."""

    store: Text

    def place(self) -> Place:
        """What no other destination of the configuration may share with this one."""
        raise NotImplementedError


class DestinationFactory(Protocol):
    """Builds a destination from its store's and its own settings (a kind's ``from_config``).

    Makes no network call (logins happen at first use). ``connections`` holds one connection per
    store, shared by the destinations of that store; ``on_call`` (the metrics hook,
    :data:`rotator.contracts.OnCall`) hears every call the store's connection makes.
    """

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


@dataclass(frozen=True)
class StoreKind:
    """One kind of store, as its package declares it in ``KIND``."""

    type: str
    """The ``type:`` of its stores, e.g. ``vault``; ``store``'s ``type`` field is this Literal."""
    store: builtins.type[StoreSettings]
    """The schema of a ``stores.<name>`` entry of this kind."""
    destination: builtins.type[DestinationSettings]
    """The schema of a destination naming a store of this kind."""
    build: DestinationFactory
    """Its ``from_config``: the destination for a store and destination of this kind."""
    a_store: str
    """How messages name such a store: ``a vault`` in "store 'x' is a vault store"."""
    destinations: str
    """How messages name its destinations, in the plural: ``Vault destinations``."""
    a_destination: str
    """How messages name one of its destinations: ``a Vault destination``."""
