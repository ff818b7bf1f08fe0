"""The Vault kind's configuration: a ``stores.<name>`` entry with ``type: vault`` (and its auth
methods), and a destination naming such a store. docs/configuration.md is the reference."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Discriminator

from rotator.destinations.kind import DestinationSettings, Place, StoreSettings
from rotator.durations import PositiveDuration
from rotator.fields import HttpUrl, KvPath, SecretValue, Text, _Model


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


class VaultStore(StoreSettings):
    """A HashiCorp Vault or OpenBao server with a KV v2 mount."""

    type: Literal["vault"]
    url: HttpUrl
    mount: KvPath = "secret"
    namespace: Text | None = None
    auth: VaultAuth
    ca_cert: Annotated[Path | None, AfterValidator(_readable_ca_bundle)] = None
    verify: bool = True
    timeout: PositiveDuration = timedelta(seconds=10)


class VaultDestination(DestinationSettings):
    """A field of a KV v2 secret: ``<mount>/<path>``, key ``field``; other fields are kept."""

    path: KvPath
    field: Text
    create_missing: bool = False

    def place(self) -> Place:
        return Place(
            (self.store, self.path, self.field),
            f"store {self.store!r}, path {self.path!r}, field {self.field!r}",
            "two destinations cannot share one field",
        )
