"""The rotation's states and outcomes, and how journal steps are named.

A rotation moves through :class:`Step` in order; each step is journaled *before* the side effect
it announces (docs/overview.md#the-rotation-protocol), so after a crash the last journaled step says
what may have happened::

    planned ─▶ created ─▶ verified ─▶ staged ─▶ readback_ok ─▶ promoting ─▶ promoted ─▶ done
       │          │           │          │            │              │
       └──────────┴───────────┴──────────┴────────────┴──▶ rolling_back ─▶ rolled_back
                                                                     └──▶ stuck (open; retried
                                                                          forward by recovery)

Per-destination progress is journaled as ``<step>:<destination tag>`` entries (``staging``,
``staged``, ``promoting``, ``promoted``), the tag being a short hash of the destination's name so
the journal survives a reordered configuration. Each step, when it is written and the facts it
records: docs/overview.md#the-journal.
"""

from __future__ import annotations

import enum
import hashlib


class Step(enum.StrEnum):
    """A rotation's state: the last step journaled."""

    PLANNED = "planned"
    CREATED = "created"
    VERIFIED = "verified"
    STAGED = "staged"
    READBACK_OK = "readback_ok"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    DONE = "done"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    STUCK = "stuck"


class DestStep(enum.StrEnum):
    """Per-destination journal entries: ``*ing`` before the call, the participle after it."""

    STAGING = "staging"
    STAGED = "staged"
    PROMOTING = "promoting"
    PROMOTED = "promoted"


class Outcome(enum.StrEnum):
    """What ``rotate`` reports per target (the outcomes of docs/cli.md#conventions)."""

    ROTATED = "rotated"  # new key served everywhere, old key revoked
    PROMOTED = "promoted"  # new key served everywhere, old key revoked at revoke_due_at
    PLANNED = "planned"  # dry run
    ROLLED_BACK = "rolled_back"  # failed before any consumer could see the new key
    STUCK = "stuck"  # failed after a promotion; both keys valid; needs attention
    SKIPPED = "skipped"  # another rotation of this target is in flight


def dest_tag(destination_name: str) -> str:
    """A short stable tag for a destination in journal step names."""
    return hashlib.sha256(destination_name.encode()).hexdigest()[:10]


def dest_step(step: DestStep, destination_name: str) -> str:
    """The journal step name of ``step`` for one destination."""
    return f"{step}:{dest_tag(destination_name)}"
