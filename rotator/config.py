"""rotator's configuration: the pydantic models of the YAML file and :func:`load_config`.

The file format is part of the external contract (``CONTRACT.md``, "Configuration file"): names
and meanings here change only with a compatibility path. Every model is frozen and rejects
unknown keys. Secret-bearing fields hold :class:`~rotator.secret.Secret` and may be given inline
(``admin_key: ${MISTRAL_ADMIN_KEY}``) or as a file (``admin_key_file: /run/secrets/…``), never
both.

:func:`load_config` (and :func:`parse_config` for an already-parsed mapping) is the only way in
from outside: it reads YAML, expands ``${NAME}`` from the environment, validates, and turns
every problem into one :class:`~rotator.errors.ConfigError` line, ``file: field.path: problem``,
that never contains a secret.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    Tag,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rotator.durations import Duration, PositiveDuration, format_duration
from rotator.schedule import Schedule, ScheduleField
from rotator.secret import Secret

__all__ = [
    "AppRoleAuth",
    "AwsDestination",
    "AwsSecretsManagerStore",
    "Config",
    "Destination",
    "EngineSettings",
    "KubernetesAuth",
    "MistralSettings",
    "Policy",
    "Schedule",
    "ServerSettings",
    "StateSettings",
    "Store",
    "Target",
    "TokenAuth",
    "VaultAuth",
    "VaultDestination",
    "VaultStore",
]

# --------------------------------------------------------------------------------------------
# Field types. Their messages never repeat the rejected value: it may be a misplaced secret.
# --------------------------------------------------------------------------------------------

LOC_KEY = "rotator_loc"
"""Context key of a :class:`PydanticCustomError`: field names to append to the error's loc."""


def problem(message: str, *loc: str | int) -> PydanticCustomError:
    """A validation error whose field path is the validated object's plus ``loc``."""
    return PydanticCustomError("rotator", message, {LOC_KEY: loc})


def _to_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret(_text(value, strip=False))


SecretValue = Annotated[Secret, PlainValidator(_to_secret), PlainSerializer(str, return_type=str)]
"""A credential: validated from a non-empty string, printed and serialised as ``***``."""


def _text(value: object, *, strip: bool = True) -> str:
    if not isinstance(value, str):
        raise problem("must be a string")
    if not (value.strip() if strip else value):
        raise problem("must not be empty")
    return value


Text = Annotated[str, BeforeValidator(_text)]
"""A non-empty string."""


def _http_url(value: object) -> str:
    text = _text(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must be a base URL, without ?query or #fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return text.rstrip("/")


HttpUrl = Annotated[str, BeforeValidator(_http_url)]
"""An ``http(s)://host[:port][/path]`` base URL, stored without a trailing slash."""


def _uuid(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            pass
    raise ValueError("must be a UUID, like 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce")


UuidText = Annotated[str, BeforeValidator(_uuid)]
"""A UUID in canonical lowercase text form."""


def _url_path(value: object) -> str:
    text = _text(value).strip()
    if not text.startswith("/"):
        raise ValueError("must start with '/', like /v1/admin")
    return text.rstrip("/") or "/"


def _kv_path(value: object) -> str:
    text = _text(value).strip().strip("/")
    if not text:
        raise ValueError("must name a path, not only '/'")
    if any(part in {"", ".", ".."} for part in text.split("/")):
        raise ValueError("must not contain empty, '.' or '..' segments")
    return text


KvPath = Annotated[str, BeforeValidator(_kv_path)]
"""A Vault path or mount without leading or trailing slashes."""


def _listen(value: object) -> str:
    text = _text(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port with a port from 0 to 65535, like 127.0.0.1:9402")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("an IPv6 host needs brackets, like [::1]:9402")
    if host.startswith("[") != host.endswith("]") or host == "[]":
        raise ValueError("must be host:port, like 127.0.0.1:9402")
    return text


def _pattern(regex: str, message: str) -> Callable[[str], str]:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return check


TargetName = Annotated[
    str,
    BeforeValidator(_text),
    AfterValidator(
        _pattern(r"[a-z0-9-]{1,100}", "must be lowercase letters, digits and '-' (at most 100)")
    ),
]
KeyNamePrefix = Annotated[
    str,
    BeforeValidator(_text),
    AfterValidator(
        _pattern(r"[A-Za-z0-9-]{1,200}", "must be letters, digits and '-' (at most 200)")
    ),
]
STORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# --------------------------------------------------------------------------------------------
# The base model: unknown keys and ``<name>_file`` secrets are handled here, once.
# --------------------------------------------------------------------------------------------


def _read_secret_file(value: object, key: str, info: ValidationInfo) -> Secret:
    """Read a ``*_file`` secret: the content minus one trailing newline; never echoed."""
    if not isinstance(value, str) or not value.strip():
        raise problem("must be the path of a file holding the secret", key)
    try:
        raw = Path(value).read_bytes()
    except OSError as exc:
        raise problem(f"cannot read {value}: {exc.strerror or type(exc).__name__}", key) from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise problem(f"{value} is not UTF-8 text", key) from None
    if content.endswith("\r\n"):
        content = content[:-2]
    elif content.endswith("\n"):
        content = content[:-1]
    if not content:
        raise problem(f"{value} is empty", key)
    context = info.context
    if isinstance(context, dict) and isinstance(context.get("secrets"), list):
        context["secrets"].append(content)
    return Secret(content)


class _Model(BaseModel):
    """Frozen, unknown keys refused with the list of known ones, ``*_file`` secrets read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    _secret_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that may also be given as ``<field>_file``; exactly one of the two."""
    _foreign_keys: ClassVar[Mapping[str, str]] = {}
    """Keys of a sibling model, mapped to a hint explaining where they belong."""
    _hidden_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields that are not read from the input (set by the loader)."""

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data  # pydantic reports "must be a mapping" (or takes a model instance)
        data = dict(data)
        known = [name for name in cls.model_fields if name not in cls._hidden_fields]
        allowed = set(known) | {f"{name}_file" for name in cls._secret_fields}
        for key in data:
            if key in allowed:
                continue
            name = key if isinstance(key, str) else repr(key)
            if key in cls._foreign_keys:
                store = data.get("store")
                shown = repr(store) if isinstance(store, str) else "(none)"
                raise problem(cls._foreign_keys[key].replace("{store}", shown), name)
            raise problem(f"unknown key (known: {', '.join(_display(known, cls))})", name)
        for name in cls._secret_fields:
            file_key = f"{name}_file"
            if file_key in data:
                if name in data:
                    raise problem(f"give {name} or {file_key}, not both", file_key)
                data[name] = _read_secret_file(data.pop(file_key), file_key, info)
            elif name not in data and cls.model_fields[name].is_required():
                raise problem(f"required: give {name} or {file_key}", name)
        return cls._rewrite(data, info)

    @classmethod
    def _rewrite(cls, data: dict[Any, Any], _info: ValidationInfo) -> dict[Any, Any]:
        """Subclass hook: adjust the checked input mapping before field validation."""
        return data


def _display(known: list[str], cls: type[_Model]) -> Iterator[str]:
    for name in known:
        yield f"{name}|{name}_file" if name in cls._secret_fields else name


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
            raise problem("give user_id or user_email (exactly one)", "user_id")
        if self.user_email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", self.user_email):
            raise problem("must be an e-mail address", "user_email")
        return self


class StateSettings(_Model):
    """Where the journal, audit trail and leases live (a SQLAlchemy URL)."""

    url: Text = "sqlite:///var/lib/rotator/state.db"

    @model_validator(mode="after")
    def _parse_url(self) -> StateSettings:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(self.url)
        except (ArgumentError, ValueError):
            raise problem(
                "must be a SQLAlchemy URL, like sqlite:///var/lib/rotator/state.db", "url"
            ) from None
        return self

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for logs and messages."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)


class ServerSettings(_Model):
    """The HTTP server of ``rotator run``: health, metrics and (with a token) the API."""

    _secret_fields = ("admin_token",)

    listen: Annotated[str, BeforeValidator(_listen)] = "127.0.0.1:9402"
    admin_token: SecretValue | None = None

    @property
    def host(self) -> str:
        """The host part of ``listen``, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of ``listen`` (0 = any free port)."""
        return int(self.listen.rpartition(":")[2])


# --------------------------------------------------------------------------------------------
# stores
# --------------------------------------------------------------------------------------------


class TokenAuth(_Model):
    """Vault token auth."""

    _secret_fields = ("token",)

    method: Literal["token"]
    token: SecretValue


class AppRoleAuth(_Model):
    """Vault AppRole auth."""

    _secret_fields = ("secret_id",)

    method: Literal["approle"]
    role_id: Text
    secret_id: SecretValue
    mount: KvPath = "approle"


class KubernetesAuth(_Model):
    """Vault Kubernetes auth with the pod's service-account token."""

    method: Literal["kubernetes"]
    role: Text
    jwt_path: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    mount: KvPath = "kubernetes"


VaultAuth = Annotated[
    TokenAuth | AppRoleAuth | KubernetesAuth,
    Discriminator("method"),
]


class VaultStore(_Model):
    """A HashiCorp Vault or OpenBao server with a KV v2 mount."""

    type: Literal["vault"]
    url: HttpUrl
    mount: KvPath = "secret"
    namespace: Text | None = None
    auth: VaultAuth
    ca_cert: Path | None = None
    verify: bool = True
    timeout: PositiveDuration = timedelta(seconds=10)


class AwsSecretsManagerStore(_Model):
    """An AWS Secrets Manager region; credentials come from the default AWS chain."""

    type: Literal["aws_secrets_manager"]
    region: Annotated[
        str,
        BeforeValidator(_text),
        AfterValidator(
            _pattern(r"[a-z]{2}(-[a-z]+)+-\d+", "must be an AWS region, like eu-west-1")
        ),
    ]
    endpoint_url: HttpUrl | None = None
    timeout: PositiveDuration = timedelta(seconds=10)


Store = Annotated[
    VaultStore | AwsSecretsManagerStore,
    Discriminator("type"),
]
STORE_KINDS: Mapping[str, str] = {
    "vault": "a vault",
    "aws_secrets_manager": "an AWS Secrets Manager",
}
"""Store ``type`` -> how messages name it."""


# --------------------------------------------------------------------------------------------
# destinations: their kind follows from the store they name
# --------------------------------------------------------------------------------------------

_AWS_ONLY = (
    "store {store} is a vault store; {key} is for AWS Secrets Manager destinations"
    " (a Vault destination takes path, field and create_missing)"
)
_VAULT_ONLY = (
    "store {store} is an AWS Secrets Manager store; {key} is for Vault destinations"
    " (an AWS destination takes secret_id, field, create_missing, kms_key_id and tags)"
)


def _foreign(template: str, keys: tuple[str, ...]) -> Mapping[str, str]:
    """Hints for keys that belong to the other destination kind ({store} filled in later)."""
    return {key: template.replace("{key}", key) for key in keys}


class VaultDestination(_Model):
    """A field of a KV v2 secret: ``<mount>/<path>``, key ``field``; other fields are kept."""

    _foreign_keys = _foreign(_AWS_ONLY, ("secret_id", "kms_key_id", "tags"))

    store: Text
    path: KvPath
    field: Text
    create_missing: bool = False


class AwsDestination(_Model):
    """An AWS secret: the whole SecretString, or ``field`` of its JSON (others kept)."""

    _foreign_keys = _foreign(_VAULT_ONLY, ("path",))

    store: Text
    secret_id: Text
    field: Text | None = None
    create_missing: bool = False
    kms_key_id: Text | None = None
    tags: dict[str, str] = {}


# Store name -> store type, from the raw ``stores:`` while a Config is being validated.
_STORE_TYPES: ContextVar[Mapping[str, object] | None] = ContextVar("_STORE_TYPES", default=None)
_UNKNOWN_STORE = "unknown-store"


def _destination_kind(value: Any) -> str | None:
    """Which destination model applies: the named store's type, else the keys given."""
    if isinstance(value, VaultDestination):
        return "vault"
    if isinstance(value, AwsDestination):
        return "aws_secrets_manager"
    if not isinstance(value, Mapping):
        return None
    types = _STORE_TYPES.get()
    store = value.get("store")
    if types is not None and isinstance(store, str) and store.strip():
        if store not in types:
            return _UNKNOWN_STORE
        kind = types[store]
        if kind in STORE_KINDS:
            return str(kind)
    return "aws_secrets_manager" if "secret_id" in value else "vault"


def _unknown_store(value: Any) -> Any:
    known = list(_STORE_TYPES.get() or {})
    listing = f"known: {', '.join(known)}" if known else "no stores are configured"
    raise problem(f"unknown store {value.get('store')!r} ({listing})", "store")


Destination = Annotated[
    Annotated[VaultDestination, Tag("vault")]
    | Annotated[AwsDestination, Tag("aws_secrets_manager")]
    | Annotated[Any, PlainValidator(_unknown_store), Tag(_UNKNOWN_STORE)],
    Discriminator(
        _destination_kind,
        custom_error_type="rotator",
        custom_error_message="must be a mapping with store and the destination's fields",
        custom_error_context={LOC_KEY: ()},
    ),
]
"""A :class:`VaultDestination` or an :class:`AwsDestination`, chosen by its store's type."""


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
    jitter: Duration = timedelta(minutes=5)

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        found = policy_problem(self)
        if found:
            raise problem(found[1], found[0][0])
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
    key_name_prefix: KeyNamePrefix | None = None
    adopt_existing: bool = False
    destinations: Annotated[tuple[Destination, ...], Field(min_length=1)]

    schedule: ScheduleField | None = None
    max_age: PositiveDuration | None = None
    grace: Duration | None = None
    key_expiration: PositiveDuration | None = None
    activation_timeout: PositiveDuration | None = None
    max_grace: Duration | None = None
    drain: bool | None = None
    jitter: Duration | None = None

    _policy: Policy | None = PrivateAttr(default=None)

    @classmethod
    def _rewrite(cls, data: dict[Any, Any], _info: ValidationInfo) -> dict[Any, Any]:
        for name in POLICY_FIELDS:
            if name != "key_expiration" and name in data and data[name] is None:
                raise problem("must not be null (leave it out to inherit defaults)", name)
        if data.get("destinations") == []:
            raise problem("needs at least one destination", "destinations")
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

    @property
    def prefix(self) -> str:
        """The key-name prefix: ``key_name_prefix`` or ``rotator-<name>``."""
        return self.key_name_prefix or f"rotator-{self.name}"


def merge_policy(defaults: Policy, target: Target) -> Policy:
    """``defaults`` with the target's overrides (not re-checked: see :func:`policy_problem`)."""
    return defaults.model_copy(update=target.overrides)


class EngineSettings(_Model):
    """How the engine runs rotations."""

    concurrency: Annotated[int, Field(ge=1, le=1000)] = 8

    @model_validator(mode="before")
    @classmethod
    def _no_bool(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("concurrency"), bool):
            raise problem("must be a whole number", "concurrency")
        return data


# --------------------------------------------------------------------------------------------
# the whole file
# --------------------------------------------------------------------------------------------


def _path(*parts: str | int) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class Config(_Model):
    """The whole configuration file. ``source`` is the file it came from (not read from it)."""

    _hidden_fields = frozenset({"source"})

    source: str = "<config>"
    mistral: MistralSettings
    state: StateSettings = StateSettings()
    server: ServerSettings = ServerSettings()
    stores: dict[str, Store] = {}
    defaults: Policy = Policy()
    engine: EngineSettings = EngineSettings()
    targets: tuple[Target, ...] = ()

    @classmethod
    def _rewrite(cls, data: dict[Any, Any], info: ValidationInfo) -> dict[Any, Any]:
        stores = data.get("stores")
        if isinstance(stores, Mapping):
            for name in stores:
                if not isinstance(name, str) or not STORE_NAME.fullmatch(name):
                    raise problem(
                        "store names are letters, digits, '.', '_' and '-' (at most 100)",
                        "stores",
                        str(name),
                    )
        context = info.context if isinstance(info.context, Mapping) else {}
        data["source"] = str(context.get("source", "<config>"))
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
        bound: list[Target] = []
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise problem(
                    f"duplicate target name {target.name!r}"
                    f" (also {_path('targets', seen[target.name], 'name')})",
                    "targets",
                    index,
                    "name",
                )
            seen[target.name] = index
            merged = merge_policy(self.defaults, target)
            found = policy_problem(merged)
            if found:
                fields, message = found
                blamed = next((f for f in fields if f in target.model_fields_set), fields[0])
                raise problem(message, "targets", index, blamed)
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
                    known = ", ".join(self.stores) or "none"
                    raise problem(f"unknown store {dest.store!r} (known: {known})", *here, "store")
                if isinstance(dest, VaultDestination) != isinstance(store, VaultStore):
                    raise problem(
                        f"store {dest.store!r} is {STORE_KINDS[store.type]} store, which does not"
                        " take this kind of destination",
                        *here,
                    )
                key: tuple[object, ...]
                if isinstance(dest, VaultDestination):
                    key = (dest.store, dest.path, dest.field)
                    what = f"store {dest.store!r}, path {dest.path!r}, field {dest.field!r}"
                    why = "two destinations cannot share one field"
                else:
                    # AWSPENDING/AWSCURRENT label a whole secret: one secret, one target's key.
                    key = (dest.store, dest.secret_id)
                    what = f"store {dest.store!r}, secret_id {dest.secret_id!r}"
                    why = "an AWS secret's version labels cover all its fields, so it holds one key"
                if key in seen:
                    raise problem(
                        f"same destination as {_path('targets', *seen[key])} ({what}); {why}",
                        *here,
                    )
                seen[key] = (t_index, d_index)

    def target(self, name: str) -> Target:
        """The target called ``name``; :class:`KeyError` if there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def store_of(self, destination: VaultDestination | AwsDestination) -> Store:
        """The store a destination names (always present in a validated config)."""
        return self.stores[destination.store]
