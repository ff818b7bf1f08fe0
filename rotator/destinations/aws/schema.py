"""The AWS kind's configuration: a ``stores.<name>`` entry with ``type: aws_secrets_manager``,
and a destination naming such a store. docs/configuration.md is the reference."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator

from rotator.destinations.kind import DestinationSettings, Place, StoreSettings
from rotator.durations import PositiveDuration
from rotator.fields import HttpUrl, Text, _pattern, _text


class AwsSecretsManagerStore(StoreSettings):
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


class AwsDestination(DestinationSettings):
    """An AWS secret: the whole SecretString, or ``field`` of its JSON (others kept)."""

    secret_id: Text
    field: Text | None = None
    create_missing: bool = False
    kms_key_id: Text | None = None
    tags: dict[str, str] = {}  # noqa: RUF012 - pydantic copies a default per instance

    def place(self) -> Place:
        # AWSPENDING/AWSCURRENT label a whole secret: one secret, one target's key.
        return Place(
            (self.store, self.secret_id),
            f"store {self.store!r}, secret_id {self.secret_id!r}",
            "an AWS secret's version labels cover all its fields, so it holds one key",
        )
