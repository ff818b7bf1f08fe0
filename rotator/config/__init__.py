"""rotator's configuration: the pydantic models of the YAML file and :func:`load_config`.

The file format is part of the external contract (docs/configuration.md): names
and meanings here change only with a compatibility path. Every model is frozen and rejects
unknown keys. Secret-bearing fields hold :class:`~rotator.secret.Secret` and may be given inline
(``admin_key: ${MISTRAL_ADMIN_KEY}``) or as a file (``admin_key_file: /run/secrets/…``), never
both.

:func:`load_config` (and :func:`parse_config` for an already-parsed mapping) is the only way in
from outside: it reads YAML, expands ``${NAME}`` from the environment, validates, and turns
every problem into one :class:`~rotator.errors.ConfigError` line, ``file: field.path: problem``,
that never contains a secret.

The field types and their validators, reading ``*_file`` secrets, and ``_Model``, the base of
every schema, are vocabulary outside the package (:mod:`rotator.fields`); each store kind's
schemas live with the kind (``rotator/destinations/<kind>/schema.py``), and
:mod:`rotator.destinations.registry` lists the kinds: this package names none. The package, by
concern (each module imports only those before it; outside, vocabulary and the store kinds):

- :mod:`~rotator.config.wording`: field paths (:func:`format_loc`) and the one-line
  :class:`~rotator.errors.ConfigError` a pydantic error becomes, scrubbed of secrets (the union
  tags to drop from a path and the secret fields are found by walking the schema);
- :mod:`~rotator.config.stores`: the ``stores:`` and destination unions of the kinds' schemas;
- :mod:`~rotator.config.model`: the other schemas (mistral, state, audit, server, policy,
  targets, engine, notifications, leader) and :class:`Config`;
- :mod:`~rotator.config.loader`: :func:`load_config`, :func:`parse_config`,
  :func:`read_listen`: the file read with limits, YAML, ``${NAME}`` expansion.

The kinds' own schemas (``VaultStore``, ``AwsDestination`` …) are imported from their kinds
(:mod:`rotator.destinations.vault.schema`, :mod:`rotator.destinations.aws.schema`); everything
else importable from ``rotator.config`` before the split still is.
"""

from __future__ import annotations

from rotator.config.loader import (
    CONFIG_ENV,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_VALUES,
    RELOAD_TIMEOUT_S,
    load_config,
    parse_config,
    read_listen,
)
from rotator.config.model import (
    DEFAULT_NOTIFY_EVENTS,
    MIN_AUDIT_KEY_CHARS,
    POLICY_FIELDS,
    POSTGRES_EXTRA,
    AuditSettings,
    Config,
    EngineSettings,
    LeaderSettings,
    MistralSettings,
    NotificationSettings,
    NotifyEvent,
    Policy,
    ServerSettings,
    StateSettings,
    Target,
    Webhook,
    import_postgres_driver,
    merge_policy,
    policy_problem,
    state_url_problem,
)
from rotator.config.stores import Destination, Store
from rotator.config.wording import format_loc
from rotator.fields import (
    LOC_KEY,
    MAX_SECRET_FILE_BYTES,
    STORE_NAME,
    HttpUrl,
    KeyNamePrefix,
    KvPath,
    SecretValue,
    TargetName,
    Text,
    UuidText,
)
from rotator.fields import _Model as _Model
from rotator.schedule import Schedule

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_NOTIFY_EVENTS",
    "LOC_KEY",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_SECRET_FILE_BYTES",
    "MAX_VALUES",
    "MIN_AUDIT_KEY_CHARS",
    "POLICY_FIELDS",
    "POSTGRES_EXTRA",
    "RELOAD_TIMEOUT_S",
    "STORE_NAME",
    "AuditSettings",
    "Config",
    "Destination",
    "EngineSettings",
    "HttpUrl",
    "KeyNamePrefix",
    "KvPath",
    "LeaderSettings",
    "MistralSettings",
    "NotificationSettings",
    "NotifyEvent",
    "Policy",
    "Schedule",
    "SecretValue",
    "ServerSettings",
    "StateSettings",
    "Store",
    "Target",
    "TargetName",
    "Text",
    "UuidText",
    "Webhook",
    "format_loc",
    "import_postgres_driver",
    "load_config",
    "merge_policy",
    "parse_config",
    "policy_problem",
    "read_listen",
    "state_url_problem",
]
