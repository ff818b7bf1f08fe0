"""Builds the Mistral clients from configuration, so every caller wires them the same way."""

from __future__ import annotations

from rotator.clock import Clock
from rotator.config import MistralSettings
from rotator.contracts import OnCall
from rotator.mistral.admin import MistralAdminClient
from rotator.mistral.verify import MistralVerifier

ACTIVATION_POLL_MAX = 0.5
"""Seconds: the longest wait between two ``GET /v1/models`` polls of a key not active yet."""


def admin_client(
    settings: MistralSettings, *, clock: Clock | None = None, on_call: OnCall | None = None
) -> MistralAdminClient:
    """The Admin API client for ``settings`` (base URL, path prefix, auth header, timeout)."""
    return MistralAdminClient(
        base_url=str(settings.admin_url),
        admin_key=settings.admin_key,
        path_prefix=settings.admin_path_prefix,
        auth_header=settings.auth_header,
        timeout=settings.timeout.total_seconds(),
        clock=clock,
        on_call=on_call,
    )


def verifier(
    settings: MistralSettings,
    *,
    admin: MistralAdminClient | None = None,
    clock: Clock | None = None,
    on_call: OnCall | None = None,
) -> MistralVerifier:
    """The ``GET /v1/models`` verifier; with ``admin`` it tells a spend limit from a rate limit.

    Activation polls back off to :data:`ACTIVATION_POLL_MAX` at most, so a rotation waiting for
    its new key sees it active within about that long of Mistral activating it.
    """
    return MistralVerifier(
        api_url=str(settings.api_url),
        timeout=settings.timeout.total_seconds(),
        clock=clock,
        spend_limit_probe=admin.spend_limit_reached if admin is not None else None,
        on_call=on_call,
        max_delay=ACTIVATION_POLL_MAX,
    )
