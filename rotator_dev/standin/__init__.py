"""A local stand-in for Mistral's Admin API and ``GET /v1/models``, served over real HTTP.

It follows Mistral's *documented* API (its public OpenAPI spec, ``openapi-public-doc.yaml`` in
``mistralai/platform-docs-public``, and its admin guides), not any client of ours, and models
the documented unknowns as switches: activation and revocation delays, billing, spending limits,
an organization expiration policy, whether deleted keys stay listed. Faults (status codes,
hangs, dropped connections, latency, fail-after-create) are injected per operation through the
``/_standin`` control API, and the clock can be moved.

- :class:`StandinState` — the organization, pure and thread-safe (``state.py``)
- :func:`create_app` — the Starlette app (``app.py``; control routes in ``control.py``)
- :class:`StandinServer`, :func:`run_standin` — serving with uvicorn (``server.py``)
- :class:`StandinControl` — the typed control client (``client.py``)

Never for production: it keeps keys in memory and its control API has no authentication
(it answers loopback clients only).
"""

from __future__ import annotations

from rotator_dev.standin.app import create_app
from rotator_dev.standin.client import StandinControl, StandinControlError, StandinHandle
from rotator_dev.standin.faults import Fault, FaultKind, FaultWhen, Operation
from rotator_dev.standin.records import (
    ANALYTICS_WORKSPACE_ID,
    ARCHIVED_WORKSPACE_ID,
    BATCH_WORKSPACE_ID,
    DEFAULT_ADMIN_KEY,
    DEFAULT_WORKSPACE_ID,
    SEED_USER_EMAIL,
    SEED_USER_ID,
    KeyFacts,
    Settings,
)
from rotator_dev.standin.server import StandinServer, run_standin
from rotator_dev.standin.state import StandinState

__all__ = [
    "ANALYTICS_WORKSPACE_ID",
    "ARCHIVED_WORKSPACE_ID",
    "BATCH_WORKSPACE_ID",
    "DEFAULT_ADMIN_KEY",
    "DEFAULT_WORKSPACE_ID",
    "SEED_USER_EMAIL",
    "SEED_USER_ID",
    "Fault",
    "FaultKind",
    "FaultWhen",
    "KeyFacts",
    "Operation",
    "Settings",
    "StandinControl",
    "StandinControlError",
    "StandinHandle",
    "StandinServer",
    "StandinState",
    "create_app",
    "run_standin",
]
