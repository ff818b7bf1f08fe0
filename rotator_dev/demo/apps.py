"""The application side of the demo: keys written and read the way operators and services do.

:func:`seed_legacy_keys` plays the operator before rotator: per target, a key made by hand in
Mistral and written to every destination (the demo's targets set ``adopt_existing``, so the first
rotation takes it over and revokes it after its grace). :class:`Consumer` plays the services: it
keeps reading each target's key from every destination — Vault's latest version, a plain AWS
``GetSecretValue`` (no stage, no version) — and calling ``GET /v1/models`` with it, counting the
calls that fail. Keys stay inside :class:`~rotator.secret.Secret`; only fingerprints leave.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import boto3
import httpx

from rotator.config import Config, Target
from rotator.destinations.aws.schema import AwsDestination, AwsSecretsManagerStore
from rotator.destinations.vault.schema import TokenAuth, VaultDestination, VaultStore
from rotator.secret import Secret

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


@dataclass(frozen=True, slots=True)
class Place:
    """Where applications read a target's key: one destination of the configuration."""

    target: str
    store: str
    kind: Literal["vault", "aws"]
    name: str
    """Vault: ``<mount>/data/<path>``; AWS: the secret id."""
    field: str | None


@dataclass(frozen=True, slots=True)
class LegacyKey:
    """A key made by hand before rotator ran (its id and fingerprint, never its value)."""

    target: str
    key_id: str
    fingerprint: str


class AppStores:
    """Reads and writes keys in the configuration's stores as an application would: Vault over
    HTTP with the store's token, AWS with a plain boto3 client. Thread-safe."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._http = httpx.Client(trust_env=False, timeout=10)
        self._aws: dict[str, SecretsManagerClient] = {}
        for name, store in cfg.stores.items():
            if isinstance(store, AwsSecretsManagerStore):
                self._aws[name] = boto3.session.Session().client(
                    "secretsmanager", region_name=store.region, endpoint_url=store.endpoint_url
                )

    def close(self) -> None:
        self._http.close()
        for client in self._aws.values():
            client.close()

    def places(self, target: Target) -> list[Place]:
        """Every destination of ``target``, in configuration order."""
        found = []
        for dest in target.destinations:
            if isinstance(dest, AwsDestination):
                found.append(Place(target.name, dest.store, "aws", dest.secret_id, dest.field))
            elif isinstance(dest, VaultDestination):
                mount = self._vault_store(dest.store).mount
                name = f"{mount}/data/{dest.path}"
                found.append(Place(target.name, dest.store, "vault", name, dest.field))
        return found

    def write(self, place: Place, key: Secret) -> None:
        """Create or overwrite the secret at ``place`` with ``key`` (in its field, if any)."""
        text = json.dumps({place.field: key.reveal()}) if place.field else key.reveal()
        if place.kind == "aws":
            client = self._aws[place.store]
            try:
                client.create_secret(Name=place.name, SecretString=text)
            except client.exceptions.ResourceExistsException:
                client.put_secret_value(SecretId=place.name, SecretString=text)
            return
        url, token = self._vault(place.store)
        answer = self._http.post(
            f"{url}/v1/{place.name}",
            headers={"X-Vault-Token": token},
            json={"data": {place.field or "value": key.reveal()}},
        )
        answer.raise_for_status()

    def read(self, place: Place) -> Secret:
        """The key an application reading ``place`` gets now."""
        if place.kind == "aws":
            text = self._aws[place.store].get_secret_value(SecretId=place.name)["SecretString"]
            value = json.loads(text)[place.field] if place.field else text
        else:
            url, token = self._vault(place.store)
            answer = self._http.get(f"{url}/v1/{place.name}", headers={"X-Vault-Token": token})
            answer.raise_for_status()
            value = answer.json()["data"]["data"][place.field or "value"]
        return Secret(str(value))

    def _vault_store(self, name: str) -> VaultStore:
        store = self._cfg.stores[name]
        if not isinstance(store, VaultStore):
            raise TypeError(f"stores.{name}: not a Vault store")
        return store

    def _vault(self, name: str) -> tuple[str, str]:
        """The store's URL and token (the demo reads Vault with a token only)."""
        store = self._vault_store(name)
        if not isinstance(store.auth, TokenAuth):
            raise TypeError(f"stores.{name}.auth: the demo reads Vault with a token only")
        return store.url, store.auth.token.reveal()


def seed_legacy_keys(cfg: Config, stores: AppStores) -> list[LegacyKey]:
    """Per target, create a key through the Admin API (as an operator did by hand) and write it
    to every destination of the target."""
    mistral = cfg.mistral
    if mistral.user_id is None:
        raise ValueError("mistral.user_id: the demo needs it to create keys")
    seeded = []
    with httpx.Client(
        base_url=f"{mistral.admin_url}{mistral.admin_path_prefix}",
        headers={"Authorization": f"Bearer {mistral.admin_key.reveal()}"},
        trust_env=False,
        timeout=10,
    ) as admin:
        for target in cfg.targets:
            answer = admin.post(
                "/api-keys",
                json={
                    "workspace_uuid": target.workspace_id,
                    "user_id": mistral.user_id,
                    "name": f"legacy-{target.name}",
                },
            )
            answer.raise_for_status()
            created = answer.json()
            key = Secret(created["key"])
            for place in stores.places(target):
                stores.write(place, key)
            seeded.append(LegacyKey(target.name, str(created["key_id"]), key.fingerprint))
    return seeded


class Consumer:
    """A background thread that behaves like the services using the keys: round after round,
    for every place, read the key and call ``GET /v1/models`` with it.

    ``report`` hears one line per failed call (fingerprints only). ``calls``, ``failures`` and
    ``seen`` (the fingerprint last read, per target and store) may be read from any thread.
    """

    def __init__(
        self,
        stores: AppStores,
        places: Sequence[Place],
        api_url: str,
        *,
        pause: float,
        report: Callable[[str], None],
    ) -> None:
        self._stores = stores
        self._places = list(places)
        self._api_url = api_url.rstrip("/")
        self._pause = pause
        self._report = report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-consumer", daemon=True)
        self._http = httpx.Client(trust_env=False, timeout=10)
        self.calls = 0
        self.failures = 0
        self.seen: dict[str, dict[str, str]] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the call in progress and stop (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for place in self._places:
                if self._stop.wait(self._pause):
                    return
                self._call(place)

    def _call(self, place: Place) -> None:
        where = f"{place.target} via {place.store}"
        try:
            key = self._stores.read(place)
        except Exception as exc:  # noqa: BLE001 - any failed read is a failure to count
            self._fail(f"{where}: reading the key failed ({type(exc).__name__})")
            return
        self.seen.setdefault(place.target, {})[place.store] = key.fingerprint
        try:
            status = self._http.get(
                f"{self._api_url}/v1/models",
                headers={"Authorization": f"Bearer {key.reveal()}"},
            ).status_code
        except httpx.HTTPError as exc:
            self._fail(f"{where}: GET /v1/models failed ({type(exc).__name__})")
            return
        if status != 200:
            self._fail(f"{where}: GET /v1/models answered {status} to key {key.fingerprint}")
            return
        self.calls += 1

    def _fail(self, line: str) -> None:
        self.calls += 1
        self.failures += 1
        self._report(line)
