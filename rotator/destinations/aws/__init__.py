"""The AWS Secrets Manager store kind (``type: aws_secrets_manager``): its ``KIND`` and its
construction.

:mod:`.schema` holds its configuration; :mod:`.destination` the destination and :mod:`.api` the
boto3 seam, which :func:`from_config` imports when it first builds a destination: reading a
configuration, which lists this kind, does not load boto3.
"""

from __future__ import annotations

from rotator.clock import Clock
from rotator.contracts import Destination, OnCall
from rotator.destinations._common import StoreConnections
from rotator.destinations.aws.schema import AwsDestination, AwsSecretsManagerStore
from rotator.destinations.kind import StoreKind
from rotator.pool import BlockingPool


def from_config(
    store: AwsSecretsManagerStore,
    destination: AwsDestination,
    *,
    pool: BlockingPool,
    clock: Clock,
    connections: StoreConnections,
    on_call: OnCall | None = None,
) -> Destination:
    """The Secrets Manager destination for a configured destination; the store's boto3 client
    (credentials from the default AWS chain) is shared through ``connections``, and its calls
    are reported to ``on_call``."""
    del clock  # boto3 refreshes its own credentials; nothing here is timed
    from rotator.destinations.aws import api
    from rotator.destinations.aws import destination as runtime

    def connect() -> api.Boto3SecretsManager:
        return api.Boto3SecretsManager.connect(
            region=store.region,
            endpoint_url=store.endpoint_url,
            timeout=store.timeout.total_seconds(),
            on_call=on_call,
        )

    return runtime.AwsDestination(
        api=connections.get(destination.store, connect),
        pool=pool,
        store=destination.store,
        secret_id=destination.secret_id,
        field=destination.field,
        create_missing=destination.create_missing,
        kms_key_id=destination.kms_key_id,
        tags=destination.tags,
    )


KIND = StoreKind(
    type="aws_secrets_manager",
    store=AwsSecretsManagerStore,
    destination=AwsDestination,
    build=from_config,
    a_store="an AWS Secrets Manager",
    destinations="AWS Secrets Manager destinations",
    a_destination="an AWS destination",
)
