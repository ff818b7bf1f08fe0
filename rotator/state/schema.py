"""The state database's tables (the latest schema version), their columns and size limits.

The schema is created and upgraded only by :mod:`rotator.state.migrations`; the column lists
here are what :mod:`rotator.state.ops` reads, in this order. No column can hold a plaintext key:
every value is an identifier, a fingerprint, a timestamp, a count, scrubbed error text or JSON
facts checked by :mod:`rotator.state.guard`.

::

    target_states 1──* retiring_keys      keys replaced, valid until revoke_due_at
          1
          └──* rotations 1──* journal_steps  one step per (rotation_id, step), ordered by seq
    audit_log (seq 1..n, hash- or HMAC-chained)  ·  audit_head (seq, hash of the last row)
    schema_version (one row per migration applied)

Times are UTC: ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL, ``DATETIME`` text
``YYYY-MM-DD HH:MM:SS.ffffff`` (naive, meaning UTC) on SQLite; dates ``YYYY-MM-DD``; JSON is
kept as the exact text written (PostgreSQL ``json``, not ``jsonb``, which would rewrite numbers
such as ``1e+20`` and so change what an audit row's hash covers); booleans are 0/1 on SQLite.
These are the forms SQLAlchemy wrote before issue 14, so older databases read the same.
"""

from __future__ import annotations

ID = 64
"""Length of id columns: Mistral key ids and rotation ids are UUID strings (36)."""
NAME = 255
"""Mistral key names are at most 255 characters."""
FINGERPRINT = 16
"""Fingerprints are 12 hex characters."""
TARGET = 128
HMAC_KEY_ID = 16
"""The id of an audit HMAC key: 16 hex characters derived from the key, never the key."""
LABEL = 64
"""States, outcomes, steps and event names."""

ONE_OPEN_ROTATION = "uq_rotations_one_open"
"""The partial unique index that allows one open rotation per target."""

TARGET_COLUMNS = (
    "target, key_id, key_fingerprint, key_created_at, key_expiration, key_rotation_id,"
    " adopted_key_id, last_rotated_at, consecutive_failures, backoff_until, updated_at,"
    " first_seen_at"
)
RETIRING_COLUMNS = "target, key_id, fingerprint, revoke_due_at, rotation_id"
ROTATION_COLUMNS = (
    "rotation_id, target, state, started_at, finished_at, outcome, error, emergency,"
    " new_key_id, new_key_name, new_key_fingerprint, old_key_ids"
)
JOURNAL_COLUMNS = "rotation_id, seq, step, at, facts"
AUDIT_COLUMNS = "seq, at, event, target, rotation_id, facts, hash, hmac_key_id"
