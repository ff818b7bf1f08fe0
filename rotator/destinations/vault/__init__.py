"""The Vault / OpenBao KV v2 store kind (``type: vault``): its ``KIND`` and its construction.

:mod:`.schema` holds its configuration; :mod:`.destination` the destination, :mod:`.api` the hvac
seam and :mod:`.auth` the logins, which :func:`from_config` imports when it first builds a
destination: reading a configuration, which lists this kind, does not load hvac.
"""

from __future__ import annotations

from rotator.clock import Clock
from rotator.contracts import Destination, OnCall
from rotator.destinations._common import StoreConnections
from rotator.destinations.kind import StoreKind
from rotator.destinations.vault.schema import VaultDestination, VaultStore
from rotator.pool import BlockingPool


def from_config(
    store: VaultStore,
    destination: VaultDestination,
    *,
    pool: BlockingPool,
    clock: Clock,
    connections: StoreConnections,
    on_call: OnCall | None = None,
) -> Destination:
    """The KV v2 destination for a configured destination; the store's session (one login) is
    shared with the other destinations of that store through ``connections``, and its calls are
    reported to ``on_call``."""
    from rotator.destinations.vault import api, auth
    from rotator.destinations.vault import destination as runtime

    def connect() -> auth.VaultSession:
        client = api.HvacApi.connect(
            store.url,
            namespace=store.namespace,
            ca_cert=str(store.ca_cert) if store.ca_cert else None,
            verify=store.verify,
            timeout=store.timeout.total_seconds(),
            on_call=on_call,
        )
        return auth.VaultSession(client, auth.credentials_for(store.auth), clock)

    return runtime.VaultDestination(
        session=connections.get(destination.store, connect),
        pool=pool,
        store=destination.store,
        mount=store.mount,
        path=destination.path,
        field=destination.field,
        create_missing=destination.create_missing,
    )


KIND = StoreKind(
    type="vault",
    store=VaultStore,
    destination=VaultDestination,
    build=from_config,
    a_store="a vault",
    destinations="Vault destinations",
    a_destination="a Vault destination",
)
