"""The ``stores:`` entries and the destinations that name them, as unions of the store kinds'
own schemas (:data:`rotator.destinations.registry.KINDS`): no kind is named here.

A ``stores.<name>`` entry is the schema of the kind its ``type`` names. A destination is the
schema of the kind of the store it names (the configuration's raw ``stores:`` tell, see
:data:`_STORE_TYPES`); a key that belongs to another kind's destinations is refused with a hint
saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

from pydantic import BeforeValidator, Discriminator, PlainValidator, Tag

from rotator.config.wording import listing
from rotator.destinations.kind import DestinationSettings, StoreKind, StoreSettings
from rotator.destinations.registry import KINDS, kind_of
from rotator.fields import LOC_KEY, _field_error

# Store name -> store type, from the raw ``stores:`` while a Config is being validated.
_STORE_TYPES: ContextVar[Mapping[str, object] | None] = ContextVar("_STORE_TYPES", default=None)
_UNKNOWN_STORE = "unknown-store"


def _keys(kind: StoreKind) -> set[str]:
    """The keys a destination of ``kind`` takes."""
    model = kind.destination
    return set(model.model_fields) | {f"{name}_file" for name in model._secret_fields}


def _refuse_foreign_keys(kind: StoreKind) -> Callable[[Any], Any]:
    """A validator of ``kind``'s destinations: the first key it does not take, if another kind's
    destinations take it, fails with a hint naming both (other unknown keys are the schema's to
    refuse)."""
    own = _keys(kind)
    others: dict[str, list[str]] = {}
    for other in (other for other in KINDS if other is not kind):
        for key in sorted(_keys(other) - own):
            others.setdefault(key, []).append(other.destinations)
    takes = listing(name for name in kind.destination.model_fields if name != "store")

    def check(value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        for key in value:
            if key in own:
                continue
            if key in others:
                store = value.get("store")
                shown = repr(store) if isinstance(store, str) else "(none)"
                raise _field_error(
                    f"store {shown} is {kind.a_store} store; {key} is for"
                    f" {listing(others[key], 'or')} ({kind.a_destination} takes {takes})",
                    key,
                )
            break
        return value

    return check


_DISTINCT_KEYS = [
    (kind.type, _keys(kind).difference(*(_keys(other) for other in KINDS if other is not kind)))
    for kind in KINDS
]
"""Each kind's type and the destination keys only that kind takes."""


def _guess(value: Mapping[Any, Any]) -> str:
    """The kind a destination's keys suggest when its store's type is unknown: the first kind
    given a key only it takes, else the first kind."""
    return next(
        (kind for kind, keys in _DISTINCT_KEYS if any(key in value for key in keys)),
        KINDS[0].type,
    )


def _destination_kind(value: Any) -> str | None:
    """Which kind's schema a destination is: its store's type, else the keys given."""
    for kind in KINDS:
        if isinstance(value, kind.destination):
            return kind.type
    if not isinstance(value, Mapping):
        return None
    types = _STORE_TYPES.get()
    store = value.get("store")
    if types is not None and isinstance(store, str) and store.strip():
        if store not in types:
            return _UNKNOWN_STORE
        if kind_of(types[store]) is not None:
            return str(types[store])
    return _guess(value)


def _unknown_store_message(store: object, known: Iterable[str]) -> str:
    names = ", ".join(known)
    where = f"known: {names}" if names else "no stores are configured"
    return f"unknown store {store!r} ({where})"


def _unknown_store(value: Any) -> Any:
    """Validator of a destination whose store is not configured: always fails, naming it."""
    message = _unknown_store_message(value.get("store"), _STORE_TYPES.get() or {})
    raise _field_error(message, "store")


# A ``stores.<name>`` entry is the schema of the kind its ``type`` names; a destination, that of
# its store's kind. Type checkers see the kinds' common bases; pydantic validates with the unions
# (which tests/unit/test_docs_config_reference.py walks for the reference's keys).
if TYPE_CHECKING:
    Store: TypeAlias = StoreSettings
    Destination: TypeAlias = DestinationSettings
else:
    Store = Annotated[
        Union[tuple(kind.store for kind in KINDS)],  # noqa: UP007 - built from the registry
        Discriminator("type"),
    ]
    _MEMBERS = (
        *(
            Annotated[kind.destination, BeforeValidator(_refuse_foreign_keys(kind)), Tag(kind.type)]
            for kind in KINDS
        ),
        Annotated[Any, PlainValidator(_unknown_store), Tag(_UNKNOWN_STORE)],
    )
    Destination = Annotated[
        Union[_MEMBERS],  # noqa: UP007 - built from the registry
        Discriminator(
            _destination_kind,
            custom_error_type="rotator",
            custom_error_message="must be a mapping with store and the destination's fields",
            custom_error_context={LOC_KEY: ()},
        ),
    ]
