"""rotator's configuration: the pydantic models of the YAML file and :func:`load_config`.

The file format is part of the external contract (docs/configuration.md): names
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

import contextlib
import json
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import structlog
import yaml
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
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from rotator.durations import Duration, PositiveDuration, format_duration
from rotator.errors import ConfigError
from rotator.schedule import Schedule, ScheduleField
from rotator.secret import MASK, Secret

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

log = structlog.get_logger(__name__)

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
    "load_config",
    "parse_config",
    "read_listen",
]

# --------------------------------------------------------------------------------------------
# Field types. Their messages never repeat the rejected value: it may be a misplaced secret.
# --------------------------------------------------------------------------------------------

LOC_KEY = "rotator_loc"
"""Context key of a :class:`PydanticCustomError`: field names to append to the error's loc."""


def _field_error(message: str, *loc: str | int) -> PydanticCustomError:
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
        raise _field_error("must be a string")
    if not (value.strip() if strip else value):
        raise _field_error("must not be empty")
    return value


Text = Annotated[str, BeforeValidator(_text)]
"""A non-empty string."""


def _http_url(value: object) -> str:
    text = _text(value).strip()
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ValueError("must be an http:// or https:// URL with a host") from None
    if "@" in parts.netloc:  # the message never repeats the URL: it would show the password
        raise ValueError(
            "must not carry credentials (user:password@); give them in their own settings"
        )
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
"""An ``http(s)://host[:port][/path]`` base URL (no ``user:password@``), stored without a
trailing slash."""


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


MAX_SECRET_FILE_BYTES = 64 << 10
_NOT_REGULAR: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
"""O_NONBLOCK: opening a FIFO with no writer returns at once, so it can be refused (a blocking
open would hang until someone writes to it)."""


def _loose_permissions(status: os.stat_result) -> str | None:
    """Why a secret file's mode lets other users read it (like ssh's check), or None.

    Group access is fine when the group is rotator's own (Kubernetes' ``fsGroup``, a
    ``root:rotator 0640`` file); any access for others is not.
    """
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o007 or (mode & 0o070 and status.st_gid != os.getegid()):
        return (
            f"is open to other users (mode {mode:04o}); make it 0600, or 0640 with"
            " rotator's own group"
        )
    return None


def _read_regular(path: str, limit: int) -> tuple[bytes | None, os.stat_result]:
    """At most ``limit`` bytes of ``path`` (None unless it is a regular file) and its status,
    without blocking on a FIFO or reading a device."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return None, status
        chunks: list[bytes] = []
        while limit > 0 and (chunk := os.read(fd, limit)):
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks), status
    finally:
        os.close(fd)


def _read_secret_file(value: object, key: str, info: ValidationInfo) -> Secret:
    """Read a ``*_file`` secret: the content minus one trailing newline.

    Only a regular file is read (a FIFO or a device would block or never end), at most 64 KiB.
    One open to other users is refused with ``strict_permissions`` in the validation context,
    else noted in its ``loose`` list for a warning.

    Messages name the field, never the path: an operator who writes ``secret_id_file:
    ${VAULT_SECRET_ID}`` has put the secret itself where the path belongs.
    """
    if not isinstance(value, str) or not value.strip():
        raise _field_error("must be the path of a file holding the secret", key)
    named = f"the file named by {key}"
    context = info.context if isinstance(info.context, dict) else {}
    try:
        raw, status = _read_regular(value, MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise _field_error(
            f"cannot read {named}: {exc.strerror or type(exc).__name__}", key
        ) from None
    except ValueError:  # a NUL byte in the path
        raise _field_error(f"cannot read {named}: invalid path", key) from None
    if raw is None:
        kind = next((f"{k}, " for test, k in _NOT_REGULAR if test(status.st_mode)), "")
        raise _field_error(f"{named} is {kind}not a regular file", key)
    loose = _loose_permissions(status)
    if loose and context.get("strict_permissions"):
        raise _field_error(f"{named} {loose} (--strict-permissions)", key)
    if loose and isinstance(context.get("loose"), list):
        context["loose"].append((key, value, f"{named} {loose}"))
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise _field_error(f"{named} is larger than 64 KiB, which no credential is", key)
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _field_error(f"{named} is not UTF-8 text", key) from None
    if content.endswith("\r\n"):
        content = content[:-2]
    elif content.endswith("\n"):
        content = content[:-1]
    if not content:
        raise _field_error(f"{named} is empty", key)
    if isinstance(context.get("secrets"), list):
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
                raise _field_error(cls._foreign_keys[key].replace("{store}", shown), name)
            raise _field_error(f"unknown key (known: {', '.join(_display(known, cls))})", name)
        for name in cls._secret_fields:
            file_key = f"{name}_file"
            if file_key in data:
                if name in data:
                    raise _field_error(f"give {name} or {file_key}, not both", file_key)
                data[name] = _read_secret_file(data.pop(file_key), file_key, info)
            elif name not in data and cls.model_fields[name].is_required():
                raise _field_error(f"required: give {name} or {file_key}", name)
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
            raise _field_error("give user_id or user_email (exactly one)", "user_id")
        if self.user_email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", self.user_email):
            raise _field_error("must be an e-mail address", "user_email")
        return self


POSTGRES_EXTRA = "pip install 'rotator[postgres]'"
"""How to install the PostgreSQL driver (the ``postgres`` extra)."""


def import_postgres_driver() -> None:
    """Import psycopg, the PostgreSQL driver of the ``postgres`` extra (ImportError if absent)."""
    import psycopg  # noqa: F401


def state_url_problem(url: str | URL) -> str | None:
    """Why ``url`` cannot hold rotator's state (a one-line problem), or None.

    The one check of a state URL: configuration loading and the state store both use it.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises several types for a bad URL
        return "must be a SQLAlchemy URL, like sqlite:////var/lib/rotator/state.db"
    backend = parsed.get_backend_name()
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
    """Where the journal, audit trail and leases live (a SQLAlchemy URL)."""

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
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)


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


def _readable_ca_bundle(value: Path | None) -> Path | None:
    """The CA bundle path, once it is known to be a readable file (TLS would fail later with a
    less clear error at every call)."""
    if value is None:
        return None
    try:
        with value.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ValueError(
            f"cannot read the CA bundle: {exc.strerror or type(exc).__name__}"
        ) from None
    except ValueError:  # a NUL byte in the path
        raise ValueError("cannot read the CA bundle: invalid path") from None
    return value


class VaultStore(_Model):
    """A HashiCorp Vault or OpenBao server with a KV v2 mount."""

    type: Literal["vault"]
    url: HttpUrl
    mount: KvPath = "secret"
    namespace: Text | None = None
    auth: VaultAuth
    ca_cert: Annotated[Path | None, AfterValidator(_readable_ca_bundle)] = None
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
        if isinstance(kind, str) and kind in STORE_KINDS:
            return kind
    return "aws_secrets_manager" if "secret_id" in value else "vault"


def _unknown_store_message(store: object, known: Iterable[str]) -> str:
    listing = ", ".join(known)
    where = f"known: {listing}" if listing else "no stores are configured"
    return f"unknown store {store!r} ({where})"


def _unknown_store(value: Any) -> Any:
    """Validator of a destination whose store is not configured: always fails, naming it."""
    message = _unknown_store_message(value.get("store"), _STORE_TYPES.get() or {})
    raise _field_error(message, "store")


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
    stores: dict[str, Store] = {}
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
                if isinstance(dest, VaultDestination) != isinstance(store, VaultStore):
                    raise _field_error(
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
                    first = format_loc(("targets", seen[key][0], "destinations", seen[key][1]))
                    raise _field_error(f"same destination as {first} ({what}); {why}", *here)
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


# --------------------------------------------------------------------------------------------
# Loading: file -> YAML -> ${NAME} expansion -> models, every failure one ConfigError line
# --------------------------------------------------------------------------------------------

CONFIG_ENV = "ROTATOR_CONFIG"
RELOAD_TIMEOUT_S = 30.0
"""How long the daemon waits for a reload's :func:`load_config` (the file and its secrets are
small: a longer load is stuck, e.g. on a FIFO given as the configuration file)."""
"""The environment variable naming the configuration file when no path is given."""
MAX_FILE_BYTES = 16 << 20
"""A fleet of 10 000 targets takes about 2 MiB; the bound stops a wrong file, not a big fleet."""
MAX_VALUES = 1_000_000
"""Values after alias expansion (a YAML alias bomb); 10 000 targets hold about 120 000."""
MAX_DEPTH = 32
_VAR = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_REDACT_MIN = 4  # shorter "secrets" would blank out ordinary words


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    env: Mapping[str, str] | None = None,
    strict_permissions: bool = False,
) -> Config:
    """Read, expand and validate a configuration file.

    ``path=None`` uses ``$ROTATOR_CONFIG`` from ``env`` (default: ``os.environ``), which also
    supplies ``${NAME}`` values. Raises :class:`~rotator.errors.ConfigError` and nothing else,
    for any input: ``str()`` is one line, ``<file as given>: <field.path>: <problem>``, with no
    secret in it. Reads the file and any ``*_file`` secrets; changes nothing.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        given = environ.get(CONFIG_ENV)
        if not given:
            raise ConfigError(
                "rotator", "", f"no configuration file: pass --config PATH or set {CONFIG_ENV}"
            )
        path = given
    source = os.fsdecode(path)
    try:
        data = _parse_yaml(_read_text(source), source)
        return parse_config(data, source=source, env=environ, strict_permissions=strict_permissions)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: only ConfigError leaves here
        raise ConfigError(
            source, "", f"could not be loaded ({type(exc).__name__}); please report this bug"
        ) from None


def parse_config(
    data: object,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    strict_permissions: bool = False,
) -> Config:
    """Validate an already-parsed document (what ``yaml.safe_load`` returns) into a Config.

    Same expansion, checks and errors as :func:`load_config`; ``source`` names the document in
    messages and becomes ``Config.source``. A ``*_file`` secret open to other users is a
    ``secret_file_permissions`` warning (logged once per field), or with ``strict_permissions``
    an error.
    """
    if data is None:
        raise ConfigError(source, "", "the file is empty; it needs at least a mistral: section")
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, "", f"the top level must be a mapping of settings, not {_kind(data)}"
        )
    expanded = _Expander(os.environ if env is None else env, source).expand(data, ())
    assert isinstance(expanded, dict)
    read_secrets: list[str] = []
    loose: list[tuple[str, str, str]] = []
    context = {
        "source": source,
        "secrets": read_secrets,
        "loose": loose,
        "strict_permissions": strict_permissions,
    }
    try:
        config = Config.model_validate(expanded, context=context)
    except ValidationError as exc:
        failure = _config_error(exc, source, expanded, read_secrets)
    else:
        for key, path, problem in dict.fromkeys(loose):  # a file named twice: one warning
            for loc in _file_keys(expanded, key, path, ()):
                log.warning("secret_file_permissions", config=source, field=loc, problem=problem)
        return config
    # Raised outside the handler: the ValidationError (which holds input values) is not chained.
    raise failure


def read_listen(source: str, env: Mapping[str, str]) -> str | None:
    """``server.listen`` of the configuration file ``source``, read alone: the YAML parsed and
    only that field expanded and validated (no ``*_file`` secret is read, nothing else is
    checked), so a file that would not load as a whole still tells where the daemon listens.
    None when the file does not set it. Raises :class:`ConfigError` like :func:`load_config`."""
    document = _parse_yaml(_read_text(source), source)
    server = document.get("server") if isinstance(document, dict) else None
    raw = server.get("listen") if isinstance(server, dict) else None
    if raw is None:
        return None
    expanded = _Expander(env, source).expand(raw, ("server", "listen"))
    try:
        return _listen(expanded)
    except ValueError as exc:
        raise ConfigError(source, "server.listen", str(exc)) from None


def _read_text(source: str) -> str:
    try:
        with Path(source).open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            source, "", f"cannot read file: {exc.strerror or type(exc).__name__}"
        ) from None
    except ValueError:  # e.g. a NUL byte in the path
        raise ConfigError(source, "", "cannot read file: invalid path") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(source, "", f"the file is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text (byte {exc.start})") from None


class _NoDuplicateKeys(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor, except that a key repeated in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: PyYAML reports it below
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


class _StrictLoader(yaml.SafeLoader, _NoDuplicateKeys):
    """The pure-Python safe loader, refusing duplicate keys; its errors name the culprit."""


_FastLoader: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _FastLoader(yaml.CSafeLoader, _NoDuplicateKeys):  # type: ignore[no-redef]
        """libyaml's parser (about ten times faster on a large fleet's file), same safe
        constructor. A document it refuses is read again by :class:`_StrictLoader`, whose
        messages are the ones shown."""


def _parse_yaml(text: str, source: str) -> object:
    if _FastLoader is not None:
        try:
            return yaml.load(text, Loader=_FastLoader)  # noqa: S506 - a CSafeLoader subclass
        except (yaml.YAMLError, RecursionError, ValueError, OverflowError):
            pass  # reported below, in the pure-Python parser's words
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and problem.startswith("but "):  # "expected …, but found …"
            problem = f"{exc.context}, {problem}"
        raise ConfigError(source, "", f"{where}{_first_line(problem)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {_first_line(str(exc))}") from None
    except RecursionError:
        raise ConfigError(source, "", "the YAML is nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # PyYAML building e.g. a date 2001-02-30
        raise ConfigError(source, "", f"invalid YAML value: {_first_line(str(exc))}") from None


def _first_line(text: str) -> str:
    """The first line of ``text`` with its whitespace collapsed (``invalid`` if it is blank)."""
    return " ".join(text.splitlines()[0].split()) if text.strip() else "invalid"


def _kind(value: object) -> str:
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _file_keys(node: object, key: str, path: str, loc: tuple[object, ...]) -> Iterator[str]:
    """The field paths in ``node`` where ``key`` is set to ``path``."""
    if isinstance(node, Mapping):
        if node.get(key) == path:
            yield format_loc((*loc, key))
        for name, value in node.items():
            yield from _file_keys(value, key, path, (*loc, name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _file_keys(value, key, path, (*loc, index))


def format_loc(loc: tuple[object, ...]) -> str:
    """A field path in ``a.b[1].c`` form (odd keys quoted: ``tags["a b"]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


class _Expander:
    """Copies a YAML document, replacing ``${NAME}``, ``${NAME:-default}`` and ``$$``."""

    def __init__(self, env: Mapping[str, str], source: str) -> None:
        self._env = env
        self._source = source
        self._count = 0
        self._open: set[int] = set()

    def _fail(self, loc: tuple[object, ...], problem: str) -> ConfigError:
        return ConfigError(self._source, format_loc(loc), problem)

    def expand(self, node: object, loc: tuple[object, ...]) -> object:
        self._count += 1
        if self._count > MAX_VALUES:
            raise self._fail(loc, f"the document has more than {MAX_VALUES} values")
        if len(loc) > MAX_DEPTH:
            raise self._fail(loc, "nested too deeply")
        if isinstance(node, str):
            return self._string(node, loc)
        if not isinstance(node, Mapping | list | tuple):
            return node
        if id(node) in self._open:
            raise self._fail(loc, "contains itself (a recursive YAML alias)")
        self._open.add(id(node))
        try:
            if isinstance(node, Mapping):
                return {key: self.expand(value, (*loc, key)) for key, value in node.items()}
            return [self.expand(value, (*loc, index)) for index, value in enumerate(node)]
        finally:
            self._open.discard(id(node))

    def _string(self, text: str, loc: tuple[object, ...]) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(1):
                return "$"
            body = match.group(2)
            if body is None:
                raise self._fail(loc, "unterminated '${' (write $$ for a literal $)")
            name, has_default, default = body.partition(":-")
            if not _VAR_NAME.fullmatch(name):
                raise self._fail(
                    loc,
                    "'${...}' must hold a variable name, like ${MISTRAL_ADMIN_KEY} or"
                    " ${NAME:-default} (write $$ for a literal $)",
                )
            value = self._env.get(name)
            if value is None or (has_default and not value):
                if not has_default:
                    raise self._fail(loc, f"environment variable {name} is not set")
                return default
            return value

        return _VAR.sub(substitute, text) if "$" in text else text


_STORE_TAGS = frozenset({"vault", "aws_secrets_manager"})
_AUTH_TAGS = frozenset({"token", "approle", "kubernetes"})
_DESTINATION_TAGS = _STORE_TAGS | {_UNKNOWN_STORE}
_DISCRIMINATORS = {"type": "vault or aws_secrets_manager", "method": "token, approle or kubernetes"}
_PLAIN_MESSAGES = {
    "missing": "missing (required)",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "mapping_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "too_short": "must not be empty",
    "path_type": "must be a file path",
    "recursion_loop": "contains itself (a recursive YAML alias)",
    "extra_forbidden": "unknown key",
}


def _clean_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    """Drop the union tags pydantic puts in a loc (``stores.x.vault.url`` -> ``stores.x.url``)."""
    parts = [part for part in loc if part != "[key]"]
    if len(parts) > 2 and parts[0] == "stores" and parts[2] in _STORE_TAGS:
        del parts[2]
        if len(parts) > 3 and parts[2] == "auth" and parts[3] in _AUTH_TAGS:
            del parts[3]
    if (
        len(parts) > 4
        and parts[0] == "targets"
        and parts[2] == "destinations"
        and parts[4] in _DESTINATION_TAGS
    ):
        del parts[4]
    return parts


def _describe(error: ErrorDetails) -> tuple[list[int | str], str]:
    """Field path and plain-words problem of one pydantic error, built without its input."""
    loc = _clean_loc(error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    extra = ctx.get(LOC_KEY)
    if isinstance(extra, tuple):
        loc.extend(extra)
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        field_name = str(ctx.get("discriminator", "")).strip("'\"")
        loc.append(field_name)
        if kind == "union_tag_not_found":
            return loc, "missing (required)"
        return loc, f"must be {_DISCRIMINATORS.get(field_name, ctx.get('expected_tags'))}"
    if kind in _PLAIN_MESSAGES:
        return loc, _PLAIN_MESSAGES[kind]
    if kind == "literal_error":
        return loc, f"must be {ctx.get('expected')}"
    if kind in {"greater_than_equal", "less_than_equal"}:
        bound = ctx.get("ge", ctx.get("le"))
        return loc, f"must be at {'least' if kind == 'greater_than_equal' else 'most'} {bound}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return loc, message[:1].lower() + message[1:]


def _secrets_in(data: Mapping[Any, Any]) -> list[str]:
    """The secret values given inline in a raw document (for scrubbing messages)."""

    def at(node: object, *keys: str) -> object:
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    found = [
        at(data, "mistral", "admin_key"),
        at(data, "server", "admin_token"),
        at(data, "audit", "hmac_key"),
    ]
    stores = at(data, "stores")
    if isinstance(stores, Mapping):
        for store in stores.values():
            found += [at(store, "auth", "token"), at(store, "auth", "secret_id")]
    url = at(data, "state", "url")
    if isinstance(url, str):
        from sqlalchemy.engine import make_url

        with contextlib.suppress(Exception):  # an unparsable URL has no password to hide
            found.append(make_url(url).password)
    return [value for value in found if isinstance(value, str)]


def _config_error(
    exc: ValidationError, source: str, data: Mapping[Any, Any], read: list[str]
) -> ConfigError:
    """The operator's one line for the first problem pydantic found, scrubbed of secrets."""
    loc, message = _describe(exc.errors(include_url=False, include_input=False)[0])
    for secret in sorted({*_secrets_in(data), *read}, key=len, reverse=True):
        if len(secret) >= _REDACT_MIN:
            message = message.replace(secret, MASK)
    return ConfigError(source, format_loc(tuple(loc)), _first_line(message))
