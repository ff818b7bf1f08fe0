"""The ``stores:`` schemas (Vault with its auth methods, AWS Secrets Manager) and the
destination schemas that name them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Discriminator, PlainValidator, Tag

from rotator.durations import PositiveDuration
from rotator.fields import (
    LOC_KEY,
    HttpUrl,
    KvPath,
    SecretValue,
    Text,
    _field_error,
    _Model,
    _pattern,
    _text,
)

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
    tags: dict[str, str] = {}  # noqa: RUF012 - pydantic copies a default per instance


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
