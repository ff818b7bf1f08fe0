"""The configuration schemas other than stores: mistral, state, audit, server, policy,
targets, engine, notifications, leader, and :class:`Config`, the whole file."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, ValidationInfo, model_validator

from rotator.config.dburl import parse_database_url
from rotator.config.stores import _STORE_TYPES, Destination, Store, _unknown_store_message
from rotator.config.wording import format_loc
from rotator.destinations.registry import kind_of
from rotator.durations import Duration, PositiveDuration, format_duration
from rotator.fields import (
    STORE_NAME,
    HttpUrl,
    KeyNamePrefix,
    SecretValue,
    TargetName,
    Text,
    UuidText,
    _field_error,
    _listen,
    _Model,
    _text,
    _url_path,
)
from rotator.schedule import Schedule, ScheduleField

# --------------------------------------------------------------------------------------------
# mistral, state, server
# --------------------------------------------------------------------------------------------


class MistralSettings(_Model):
    """How to reach Mistral: the Admin API (create/list/delete keys) and ``GET /v1/models``."""

    _secret_fields = ("admin_key",)

    admin_url: HttpUrl = "https://api.mistral.ai"
    admin_path_prefix: Annotated[str, BeforeValidator(_url_path)] = "/v1/admin"
    api_url: HttpUrl = "https://api.mistral.ai"
    admin_key: SecretValue
    auth_header: Literal["bearer", "x-api-key"] = "bearer"
    user_id: UuidText | None = None
    user_email: Text | None = None
    """Addition: the member's e-mail, resolved to ``user_id`` through the Admin API."""
    timeout: PositiveDuration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _one_user(self) -> MistralSettings:
        if (self.user_id is None) == (self.user_email is None):
            raise _field_error("give user_id or user_email (exactly one)", "user_id")
        if self.user_email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", self.user_email):
            raise _field_error("must be an e-mail address", "user_email")
        return self


POSTGRES_EXTRA = "pip install 'rotator[postgres]'"
"""How to install the PostgreSQL driver (the ``postgres`` extra)."""


def import_postgres_driver() -> None:
    """Import psycopg, the PostgreSQL driver of the ``postgres`` extra (ImportError if absent)."""
    import psycopg  # noqa: F401


def state_url_problem(url: str) -> str | None:
    """Why ``url`` cannot hold rotator's state (a one-line problem), or None.

    The one check of a state URL: configuration loading and the state store both use it.
    """
    try:
        parsed = parse_database_url(url)
    except ValueError:
        return "must be a SQLAlchemy URL, like sqlite:////var/lib/rotator/state.db"
    backend = parsed.backend
    if backend == "sqlite":
        database = parsed.database or ""
        if database in {"", ":memory:"} or database.startswith("file:"):
            return "an in-memory SQLite database would lose the state; give a file path"
        return None
    if backend == "postgresql":
        try:
            import_postgres_driver()
        except ImportError:
            return f"the PostgreSQL driver (psycopg) is not installed: {POSTGRES_EXTRA}"
        return None
    return (
        f"unsupported database {backend!r}: use sqlite:////path/state.db"
        " or postgresql://user@host/db"
    )


class StateSettings(_Model):
    """Where the journal, audit trail and leases live: ``sqlite:///path`` or
    ``postgresql://…`` (see :mod:`rotator.config.dburl`)."""

    url: Text = "sqlite:////var/lib/rotator/state.db"

    @model_validator(mode="after")
    def _check_url(self) -> StateSettings:
        problem = state_url_problem(self.url)
        if problem:
            raise _field_error(problem, "url")
        return self

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for logs and messages."""
        return parse_database_url(self.url).safe()


MIN_AUDIT_KEY_CHARS = 32


class AuditSettings(_Model):
    """The audit trail (an addition): an HMAC key kept outside the database, so that someone
    who can write the database but does not hold the key cannot rewrite the trail unnoticed."""

    _secret_fields = ("hmac_key",)

    hmac_key: SecretValue | None = None

    @model_validator(mode="after")
    def _long_enough(self) -> AuditSettings:
        if self.hmac_key is not None and len(self.hmac_key.reveal()) < MIN_AUDIT_KEY_CHARS:
            raise _field_error(
                f"must be at least {MIN_AUDIT_KEY_CHARS} characters, like the output of "
                "`openssl rand -hex 32`",
                "hmac_key",
            )
        return self


class ServerSettings(_Model):
    """The HTTP server of ``rotator run``: health, metrics and (with a token) the API."""

    _secret_fields = ("admin_token",)

    listen: Annotated[str, BeforeValidator(_listen)] = "127.0.0.1:9402"
    admin_token: SecretValue | None = None
    header_timeout: PositiveDuration = timedelta(seconds=10)
    idle_timeout: PositiveDuration = timedelta(seconds=5)
    max_connections: Annotated[int, Field(ge=1, le=10000)] = 100
    ui: bool = True
    """Serve the read-only status page at ``/ui/`` (docs/http-api.md#the-status-page)."""

    @property
    def host(self) -> str:
        """The host part of ``listen``, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of ``listen`` (0 = any free port)."""
        return int(self.listen.rpartition(":")[2])


# --------------------------------------------------------------------------------------------
# policy and targets
# --------------------------------------------------------------------------------------------


class Policy(_Model):
    """When and how keys are rotated (the ``defaults:`` block, overridable per target)."""

    schedule: ScheduleField = Schedule.parse("0 3 * * 1")
    max_age: PositiveDuration = timedelta(days=30)
    grace: Duration = timedelta(hours=1)
    key_expiration: PositiveDuration | None = timedelta(days=45)
    activation_timeout: PositiveDuration = timedelta(minutes=2)
    max_grace: Duration = timedelta(days=7)
    drain: bool = False
    at_max_grace: Literal["revoke", "alert"] = "revoke"
    """Drain: an old key still used at ``max_grace`` is revoked with an alert (``revoke``), or
    kept and alerted about daily until it goes unused (``alert``)."""
    jitter: Duration = timedelta(minutes=5)
    failure_backoff: PositiveDuration = timedelta(hours=1)
    """After a failed attempt (rolled back): wait this long, doubling per consecutive failure up
    to 32 times this."""
    stuck_backoff: PositiveDuration = timedelta(minutes=5)
    """After a rotation was left stuck (both keys valid): retry forward after this long,
    doubling per consecutive failure up to ``failure_backoff``."""

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        found = policy_problem(self)
        if found:
            raise _field_error(found[1], found[0][0])
        return self


def policy_problem(policy: Policy) -> tuple[tuple[str, ...], str] | None:
    """The first inconsistency between policy fields: (fields involved, message), or None.

    The first field named is the one to blame; the message names the others.
    """
    if policy.grace > policy.max_grace:
        return (
            ("grace", "max_grace"),
            (
                f"grace ({format_duration(policy.grace)}) must not be longer than"
                f" max_grace ({format_duration(policy.max_grace)})"
            ),
        )
    if policy.key_expiration is not None:
        held, held_name = (
            (policy.max_grace, "max_grace") if policy.drain else (policy.grace, "grace")
        )
        if policy.key_expiration <= policy.max_age + held:
            return (
                ("key_expiration", "max_age", held_name, "drain"),
                (
                    f"key_expiration ({format_duration(policy.key_expiration)}) must be longer"
                    f" than max_age + {held_name} ({format_duration(policy.max_age)} +"
                    f" {format_duration(held)}), or a key could expire before it is replaced"
                ),
            )
    return None


POLICY_FIELDS: tuple[str, ...] = tuple(Policy.model_fields)


class Target(_Model):
    """One managed credential: a workspace, a key-name prefix, destinations and a policy.

    Policy fields given here override ``defaults:``; :attr:`policy` is the merged result.
    """

    name: TargetName
    workspace_id: UuidText
    key_name_prefix: KeyNamePrefix = ""
    """Prefix of new keys' names; ``rotator-<name>`` unless given."""
    adopt_existing: bool = False
    destinations: Annotated[tuple[Destination, ...], Field(min_length=1)]

    schedule: ScheduleField | None = None
    max_age: PositiveDuration | None = None
    grace: Duration | None = None
    key_expiration: PositiveDuration | None = None
    activation_timeout: PositiveDuration | None = None
    max_grace: Duration | None = None
    drain: bool | None = None
    at_max_grace: Literal["revoke", "alert"] | None = None
    jitter: Duration | None = None
    failure_backoff: PositiveDuration | None = None
    stuck_backoff: PositiveDuration | None = None

    _policy: Policy | None = PrivateAttr(default=None)

    @classmethod
    def _rewrite(cls, data: dict[Any, Any], _info: ValidationInfo) -> dict[Any, Any]:
        for name in POLICY_FIELDS:
            if name != "key_expiration" and name in data and data[name] is None:
                raise _field_error("must not be null (leave it out to inherit defaults)", name)
        if data.get("destinations") == []:
            raise _field_error("needs at least one destination", "destinations")
        if data.get("key_name_prefix") is None and isinstance(data.get("name"), str):
            data["key_name_prefix"] = f"rotator-{data['name']}"
        return data

    @property
    def overrides(self) -> dict[str, Any]:
        """The policy fields this target sets itself (``key_expiration: null`` included)."""
        return {
            name: getattr(self, name) for name in POLICY_FIELDS if name in self.model_fields_set
        }

    @property
    def policy(self) -> Policy:
        """The effective policy: the config's ``defaults`` with this target's overrides."""
        if self._policy is None:
            self._policy = merge_policy(Policy(), self)
        return self._policy


def merge_policy(defaults: Policy, target: Target) -> Policy:
    """``defaults`` with the target's overrides (not re-checked: see :func:`policy_problem`);
    ``defaults`` itself, shared (policies are frozen), when the target overrides nothing."""
    overrides = target.overrides
    return defaults.model_copy(update=overrides) if overrides else defaults


class EngineSettings(_Model):
    """How the engine runs rotations."""

    concurrency: Annotated[int, Field(ge=1, le=1000)] = 8

    @model_validator(mode="before")
    @classmethod
    def _no_bool(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("concurrency"), bool):
            raise _field_error("must be a whole number", "concurrency")
        return data


# --------------------------------------------------------------------------------------------
# daemon: notifications and leadership (docs/configuration.md, all optional)
# --------------------------------------------------------------------------------------------

NotifyEvent = Literal[
    "rotation_failed", "rotation_stuck", "rotation_overdue", "old_key_in_use", "rotation_succeeded"
]
DEFAULT_NOTIFY_EVENTS: tuple[NotifyEvent, ...] = (
    "rotation_failed",
    "rotation_stuck",
    "rotation_overdue",
    "old_key_in_use",
)


class Webhook(_Model):
    """One webhook receiving notifications as generic JSON or a Slack-compatible message."""

    _secret_fields = ("url",)

    url: SecretValue
    """The endpoint; often carries a token (Slack), so it is kept as a secret."""
    format: Literal["json", "slack"] = "json"
    events: tuple[NotifyEvent, ...] = DEFAULT_NOTIFY_EVENTS
    timeout: PositiveDuration = timedelta(seconds=5)


class NotificationSettings(_Model):
    """Where ``rotator run`` reports failures, stuck rotations, overdue targets and the like."""

    webhooks: tuple[Webhook, ...] = ()


class LeaderSettings(_Model):
    """Which instance rotates when several run. ``auto``: a PostgreSQL advisory lock when the
    state is PostgreSQL, else none (one instance, e.g. SQLite)."""

    election: Literal["auto", "none", "postgres", "kubernetes"] = "auto"
    lease_name: Annotated[str, BeforeValidator(_text)] = "rotator"
    namespace: Text | None = None
    """Kubernetes: the Lease's namespace (default: the service account's own)."""
    lease_duration: PositiveDuration = timedelta(seconds=60)
    renew_deadline: PositiveDuration = timedelta(seconds=40)
    retry_period: PositiveDuration = timedelta(seconds=15)


# --------------------------------------------------------------------------------------------
# the whole file
# --------------------------------------------------------------------------------------------


class Config(_Model):
    """The whole configuration file. ``source`` is the file it came from (not read from it)."""

    _hidden_fields = frozenset({"source", "strict_permissions"})

    source: str = "<config>"
    strict_permissions: bool = False
    """Whether it was loaded with ``--strict-permissions`` (a reload loads the same way)."""
    mistral: MistralSettings
    state: StateSettings = StateSettings()
    audit: AuditSettings = AuditSettings()
    server: ServerSettings = ServerSettings()
    stores: dict[str, Store] = {}  # noqa: RUF012 - pydantic copies a default per instance
    defaults: Policy = Policy()
    engine: EngineSettings = EngineSettings()
    notifications: NotificationSettings = NotificationSettings()
    leader: LeaderSettings = LeaderSettings()
    targets: tuple[Target, ...] = ()

    @classmethod
    def _rewrite(cls, data: dict[Any, Any], info: ValidationInfo) -> dict[Any, Any]:
        stores = data.get("stores")
        if isinstance(stores, Mapping):
            for name in stores:
                if not isinstance(name, str) or not STORE_NAME.fullmatch(name):
                    raise _field_error(
                        "store names are letters, digits, '.', '_' and '-' (at most 100)",
                        "stores",
                        str(name),
                    )
        context = info.context if isinstance(info.context, Mapping) else {}
        data["source"] = str(context.get("source", "<config>"))
        data["strict_permissions"] = bool(context.get("strict_permissions", False))
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _with_store_types(cls, data: Any, handler: Callable[[Any], Config]) -> Config:
        """Let destinations see which type each named store has while they are validated."""
        types: dict[str, object] = {}
        if isinstance(data, Config):
            types = {name: store.type for name, store in data.stores.items()}
        elif isinstance(data, Mapping) and isinstance(data.get("stores"), Mapping):
            for name, store in data["stores"].items():
                types[str(name)] = store.get("type") if isinstance(store, Mapping) else None
        token = _STORE_TYPES.set(types)
        try:
            return handler(data)
        finally:
            _STORE_TYPES.reset(token)

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        self._check_targets()
        self._check_destinations()
        return self

    def _check_targets(self) -> None:
        """Unique names, and each target's merged policy bound to a copy of the target."""
        seen: dict[str, int] = {}
        prefixes: dict[tuple[str, str], int] = {}
        bound: list[Target] = []
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise _field_error(
                    f"duplicate target name {target.name!r}"
                    f" (also {format_loc(('targets', seen[target.name], 'name'))})",
                    "targets",
                    index,
                    "name",
                )
            seen[target.name] = index
            prefix = (target.workspace_id, target.key_name_prefix)
            if prefix in prefixes:
                raise _field_error(
                    f"key_name_prefix {target.key_name_prefix!r} is also used in this workspace"
                    f" by {format_loc(('targets', prefixes[prefix]))}; each target's keys must be"
                    " told apart by their names",
                    "targets",
                    index,
                    "key_name_prefix",
                )
            prefixes[prefix] = index
            merged = merge_policy(self.defaults, target)
            found = policy_problem(merged)
            if found:
                fields, message = found
                blamed = next((f for f in fields if f in target.model_fields_set), fields[0])
                raise _field_error(message, "targets", index, blamed)
            copy = target.model_copy()  # a Target instance may be shared by two configs
            copy._policy = merged
            bound.append(copy)
        object.__setattr__(self, "targets", tuple(bound))  # still inside validation

    def _check_destinations(self) -> None:
        seen: dict[tuple[object, ...], tuple[int, int]] = {}
        for t_index, target in enumerate(self.targets):
            for d_index, dest in enumerate(target.destinations):
                here = ("targets", t_index, "destinations", d_index)
                store = self.stores.get(dest.store)
                if store is None:
                    message = _unknown_store_message(dest.store, self.stores)
                    raise _field_error(message, *here, "store")
                kind = kind_of(store.type)
                if kind is not None and not isinstance(dest, kind.destination):
                    raise _field_error(
                        f"store {dest.store!r} is {kind.a_store} store, which does not take this"
                        " kind of destination",
                        *here,
                    )
                place = dest.place()
                if place.key in seen:
                    where = seen[place.key]
                    first = format_loc(("targets", where[0], "destinations", where[1]))
                    raise _field_error(
                        f"same destination as {first} ({place.what}); {place.why}", *here
                    )
                seen[place.key] = (t_index, d_index)

    def target(self, name: str) -> Target:
        """The target called ``name``; :class:`KeyError` if there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def store_of(self, destination: Destination) -> Store:
        """The store a destination names (always present in a validated config)."""
        return self.stores[destination.store]
