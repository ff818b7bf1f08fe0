"""Invalid configurations: each is refused with one line naming file, field and problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.config import load_config
from rotator.errors import ConfigError

WS = "019b2bd7-96e7-7219-8c0b-45a73da50088"
WS2 = "019b2bd7-96e7-7219-8c0b-45a73da50089"
SECRET = "sk-Zx81Qq0pLmN4vB7tR2yU"

BASE: dict[str, Any] = {
    "mistral": {"admin_key": SECRET, "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce"},
    "stores": {
        "vault-main": {
            "type": "vault",
            "url": "https://vault.example:8200",
            "auth": {"method": "token", "token": "hvs.vault-token"},
        },
        "aws-main": {"type": "aws_secrets_manager", "region": "eu-west-1"},
    },
    "targets": [
        {
            "name": "prod-backend",
            "workspace_id": WS,
            "destinations": [
                {"store": "vault-main", "path": "mistral/prod-backend", "field": "api_key"},
                {"store": "aws-main", "secret_id": "mistral/prod-backend"},
            ],
        },
        {
            "name": "batch",
            "workspace_id": WS2,
            "destinations": [{"store": "vault-main", "path": "mistral/batch", "field": "api_key"}],
        },
    ],
}

_MISSING = object()
Edit = tuple[str, object]


def _edited(edits: list[Edit]) -> dict[str, Any]:
    """BASE with each (dotted path, value) set; value _MISSING deletes the key."""
    data = copy.deepcopy(BASE)
    for path, value in edits:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if value is _MISSING:
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(value)
        else:
            node[last] = value
    return data


def _load_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> ConfigError:
    monkeypatch.chdir(tmp_path)
    Path("rotator.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config("rotator.yaml", env={"SET": "x"})
    return caught.value


MISTRAL_KEYS = (
    "admin_url, admin_path_prefix, api_url, admin_key|admin_key_file, auth_header, user_id,"
    " user_email, timeout"
)
NO_USERINFO = "must not carry credentials (user:password@); give them in their own settings"
HINT = "use a whole number and a unit (s, m, h, d, w), like 30s, 15m, 1h or 7d"
VAULT_DEST = ("targets", 0, "destinations", 2)

# (id, edits, exact message after "rotator.yaml: ")
CASES: list[tuple[str, list[Edit], str]] = [
    (
        "unknown top-level key",
        [("colour", "blue")],
        (
            "colour: unknown key (known: mistral, state, audit, server, stores, defaults, engine, "
            "notifications, leader, targets)"
        ),
    ),
    (
        "source is not an input",
        [("source", "elsewhere.yaml")],
        (
            "source: unknown key (known: mistral, state, audit, server, stores, defaults, engine, "
            "notifications, leader, targets)"
        ),
    ),
    (
        "unknown nested key",
        [("mistral.admin_kye", "x")],
        f"mistral.admin_kye: unknown key (known: {MISTRAL_KEYS})",
    ),
    (
        "unknown key in a store's auth",
        [("stores.vault-main.auth.role", "x")],
        "stores.vault-main.auth.role: unknown key (known: method, token|token_file)",
    ),
    (
        "bad duration",
        [("defaults.max_age", "30 days")],
        f"defaults.max_age: not a duration: {HINT}",
    ),
    ("duration without unit", [("defaults.jitter", 5)], f"defaults.jitter: needs a unit; {HINT}"),
    ("zero duration", [("mistral.timeout", "0s")], "mistral.timeout: must be longer than zero"),
    ("negative duration", [("defaults.grace", "-5m")], "defaults.grace: must not be negative"),
    (
        "zero store timeout",
        [("stores.aws-main.timeout", "0m")],
        "stores.aws-main.timeout: must be longer than zero",
    ),
    (
        "cron with 4 fields",
        [("defaults.schedule", "0 3 * *")],
        (
            "defaults.schedule: a cron expression has 5 fields (minute hour day-of-month month"
            " day-of-week), in UTC; got 4 (or write 'every <duration>', like 'every 30d')"
        ),
    ),
    (
        "cron out of range",
        [("defaults.schedule", "61 3 * * 1")],
        (
            "defaults.schedule: invalid cron expression: Error validating expression '61': the last"
            " value (61) is higher than the maximum value (59)"
        ),
    ),
    (
        "cron that never fires",
        [("targets.0.schedule", "0 0 31 2 *")],
        "targets[0].schedule: this cron expression never fires",
    ),
    (
        "bad every",
        [("defaults.schedule", "every fortnight")],
        f"defaults.schedule: every: not a duration: {HINT}",
    ),
    (
        "every zero",
        [("targets.1.schedule", "every 0s")],
        "targets[1].schedule: every: must be longer than zero",
    ),
    (
        "unknown store",
        [("targets.1.destinations.0.store", "vaultx")],
        "targets[1].destinations[0].store: unknown store 'vaultx' (known: vault-main, aws-main)",
    ),
    (
        "destination with no stores configured",
        [("stores", _MISSING)],
        "targets[0].destinations[0].store: unknown store 'vault-main' (no stores are configured)",
    ),
    (
        "AWS field on a vault destination",
        [("targets.0.destinations.2", {"store": "vault-main", "secret_id": "s", "field": "f"})],
        (
            "targets[0].destinations[2].secret_id: store 'vault-main' is a vault store;"
            " secret_id is for AWS Secrets Manager destinations (a Vault destination takes path,"
            " field and create_missing)"
        ),
    ),
    (
        "vault field on an AWS destination",
        [("targets.0.destinations.2", {"store": "aws-main", "path": "p"})],
        (
            "targets[0].destinations[2].path: store 'aws-main' is an AWS Secrets Manager store;"
            " path is for Vault destinations (an AWS destination takes secret_id, field,"
            " create_missing, kms_key_id and tags)"
        ),
    ),
    (
        "vault destination without path",
        [("targets.0.destinations.0.path", _MISSING)],
        "targets[0].destinations[0].path: missing (required)",
    ),
    (
        "destination not a mapping",
        [("targets.0.destinations.1", "aws-main")],
        "targets[0].destinations[1]: must be a mapping with store and the destination's fields",
    ),
    (
        "no destinations",
        [("targets.0.destinations", [])],
        "targets[0].destinations: needs at least one destination",
    ),
    (
        "duplicate target name",
        [("targets.1.name", "prod-backend")],
        "targets[1].name: duplicate target name 'prod-backend' (also targets[0].name)",
    ),
    (
        "duplicate vault destination",
        [("targets.1.destinations.0.path", "/mistral/prod-backend/")],
        (
            "targets[1].destinations[0]: same destination as targets[0].destinations[0] (store"
            " 'vault-main', path 'mistral/prod-backend', field 'api_key'); two destinations cannot"
            " share one field"
        ),
    ),
    (
        "two targets in one AWS secret",
        [
            (
                "targets.1.destinations.1",
                {"store": "aws-main", "secret_id": "mistral/prod-backend", "field": "other"},
            )
        ],
        (
            "targets[1].destinations[1]: same destination as targets[0].destinations[1] (store"
            " 'aws-main', secret_id 'mistral/prod-backend'); an AWS secret's version labels cover"
            " all its fields, so it holds one key"
        ),
    ),
    (
        "bad target name",
        [("targets.0.name", "Prod_Backend")],
        "targets[0].name: must be lowercase letters, digits and '-' (at most 100)",
    ),
    (
        "bad key name prefix",
        [("targets.0.key_name_prefix", "rotator prod")],
        "targets[0].key_name_prefix: must be letters, digits and '-' (at most 200)",
    ),
    (
        "bad UUID",
        [("targets.0.workspace_id", "prod")],
        "targets[0].workspace_id: must be a UUID, like 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce",
    ),
    (
        "missing workspace_id",
        [("targets.1.workspace_id", _MISSING)],
        "targets[1].workspace_id: missing (required)",
    ),
    (
        "grace over max_grace in defaults",
        [("defaults.grace", "8d")],
        "defaults.grace: grace (8d) must not be longer than max_grace (7d)",
    ),
    (
        "grace over max_grace in a target",
        [("targets.1.max_grace", "30m")],
        "targets[1].max_grace: grace (1h) must not be longer than max_grace (30m)",
    ),
    (
        "key_expiration too short",
        [("defaults.key_expiration", "30d")],
        (
            "defaults.key_expiration: key_expiration (30d) must be longer than max_age + grace"
            " (30d + 1h), or a key could expire before it is replaced"
        ),
    ),
    (
        "key_expiration too short once a target drains",
        [("targets.0.drain", True), ("targets.0.max_grace", "16d")],
        (
            "targets[0].max_grace: key_expiration (45d) must be longer than max_age + max_grace"
            " (30d + 16d), or a key could expire before it is replaced"
        ),
    ),
    (
        "null override",
        [("targets.0.grace", None)],
        "targets[0].grace: must not be null (leave it out to inherit defaults)",
    ),
    ("concurrency 0", [("engine", {"concurrency": 0})], "engine.concurrency: must be at least 1"),
    (
        "concurrency not a number",
        [("engine", {"concurrency": "many"})],
        "engine.concurrency: must be a whole number",
    ),
    (
        "unset environment variable",
        [("stores.vault-main.auth.token", "${VAULT_TOKEN}")],
        "stores.vault-main.auth.token: environment variable VAULT_TOKEN is not set",
    ),
    (
        "malformed variable reference",
        [("state.url", "sqlite:///${HOME/x}")],
        (
            "state.url: '${...}' must hold a variable name, like ${MISTRAL_ADMIN_KEY} or"
            " ${NAME:-default} (write $$ for a literal $)"
        ),
    ),
    (
        "unterminated variable reference",
        [("mistral.admin_url", "${SET")],
        "mistral.admin_url: unterminated '${' (write $$ for a literal $)",
    ),
    (
        "unreadable admin_key_file",
        [("mistral.admin_key", _MISSING), ("mistral.admin_key_file", "/nonexistent/admin-key")],
        (
            "mistral.admin_key_file: cannot read the file named by admin_key_file:"
            " No such file or directory"
        ),
    ),
    (
        "missing ca_cert",
        [("stores.vault-main.ca_cert", "/nonexistent/vault-ca.pem")],
        "stores.vault-main.ca_cert: cannot read the CA bundle: No such file or directory",
    ),
    (
        "ca_cert a directory",
        [("stores.vault-main.ca_cert", "/")],
        "stores.vault-main.ca_cert: cannot read the CA bundle: Is a directory",
    ),
    (
        "both admin_key and admin_key_file",
        [("mistral.admin_key_file", "/run/secrets/k")],
        "mistral.admin_key_file: give admin_key or admin_key_file, not both",
    ),
    (
        "neither admin_key nor admin_key_file",
        [("mistral.admin_key", _MISSING)],
        "mistral.admin_key: required: give admin_key or admin_key_file",
    ),
    ("empty admin_key", [("mistral.admin_key", "")], "mistral.admin_key: must not be empty"),
    (
        "both user_id and user_email",
        [("mistral.user_email", "bot@example.com")],
        "mistral.user_id: give user_id or user_email (exactly one)",
    ),
    (
        "bad auth_header",
        [("mistral.auth_header", "basic")],
        "mistral.auth_header: must be 'bearer' or 'x-api-key'",
    ),
    (
        "bad admin_url",
        [("mistral.admin_url", "ftp://mistral.example")],
        "mistral.admin_url: must be an http:// or https:// URL with a host",
    ),
    (
        "admin_url with user:password@",
        [("mistral.admin_url", f"https://rotator:{SECRET}@mistral.example")],
        f"mistral.admin_url: {NO_USERINFO}",
    ),
    (
        "api_url with user@",
        [("mistral.api_url", "https://rotator@mistral.example")],
        f"mistral.api_url: {NO_USERINFO}",
    ),
    (
        "vault url with user:password@",
        [("stores.vault-main.url", f"https://vault:{SECRET}@vault.example:8200")],
        f"stores.vault-main.url: {NO_USERINFO}",
    ),
    (
        "endpoint_url with user:password@",
        [("stores.aws-main.endpoint_url", f"http://a:{SECRET}@127.0.0.1:4566")],
        f"stores.aws-main.endpoint_url: {NO_USERINFO}",
    ),
    (
        "bad admin_path_prefix",
        [("mistral.admin_path_prefix", "v1/admin")],
        "mistral.admin_path_prefix: must start with '/', like /v1/admin",
    ),
    (
        "unknown auth method",
        [("stores.vault-main.auth", {"method": "ldap", "username": "x"})],
        "stores.vault-main.auth.method: must be token, approle or kubernetes",
    ),
    (
        "auth without method",
        [("stores.vault-main.auth", {"token": "t"})],
        "stores.vault-main.auth.method: missing (required)",
    ),
    (
        "approle without secret_id",
        [("stores.vault-main.auth", {"method": "approle", "role_id": "r"})],
        "stores.vault-main.auth.secret_id: required: give secret_id or secret_id_file",
    ),
    (
        "unknown store type",
        [("stores.aws-main.type", "gcp_secret_manager")],
        "stores.aws-main.type: must be vault or aws_secrets_manager",
    ),
    (
        "store without url",
        [("stores.vault-main.url", _MISSING)],
        "stores.vault-main.url: missing (required)",
    ),
    (
        "bad AWS region",
        [("stores.aws-main.region", "Europe")],
        "stores.aws-main.region: must be an AWS region, like eu-west-1",
    ),
    (
        "bad store name",
        [("stores.vault main", {"type": "vault"})],
        "stores[\"vault main\"]: store names are letters, digits, '.', '_' and '-' (at most 100)",
    ),
    (
        "bad listen address",
        [("server", {"listen": "localhost"})],
        "server.listen: must be host:port with a port from 0 to 65535, like 127.0.0.1:9402",
    ),
    (
        "IPv6 listen without brackets",
        [("server", {"listen": "::1:9402"})],
        "server.listen: an IPv6 host needs brackets, like [::1]:9402",
    ),
    (
        "bad state url",
        [("state", {"url": "not a url"})],
        "state.url: must be a SQLAlchemy URL, like sqlite:////var/lib/rotator/state.db",
    ),
    ("stores not a mapping", [("stores", ["vault-main"])], "stores: must be a mapping"),
    ("targets not a list", [("targets", {"name": "x"})], "targets: must be a list"),
    (
        "adopt_existing not a boolean",
        [("targets.0.adopt_existing", "maybe")],
        "targets[0].adopt_existing: must be true or false",
    ),
    (
        "tags not strings",
        [("targets.0.destinations.1.tags", {"team": [1]})],
        ("targets[0].destinations[1].tags.team: must be a string"),
    ),
    ("missing mistral section", [("mistral", _MISSING)], "mistral: missing (required)"),
]


@pytest.mark.parametrize(("edits", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edits: list[Edit], expected: str
) -> None:
    """Each invalid document gives exactly one line: file, field path and problem."""
    error = _load_text(tmp_path, monkeypatch, yaml.safe_dump(_edited(edits), sort_keys=False))
    assert str(error) == f"rotator.yaml: {expected}"
    assert "\n" not in str(error)
    assert error.source == "rotator.yaml"


def test_base_is_valid(tmp_path: Path) -> None:
    """The document the cases start from loads, so each case fails for its own edit only."""
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    assert [t.name for t in load_config(path, env={}).targets] == ["prod-backend", "batch"]


# Ten times more values at each level: 10^6 once expanded, from a few hundred bytes.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    for prev, name in zip("abcde", "bcdef", strict=True)
)
TEXT_CASES = [
    ("top level a list", "- mistral\n", "the top level must be a mapping of settings, not a list"),
    (
        "top level a string",
        "rotator\n",
        "the top level must be a mapping of settings, not a string",
    ),
    ("empty file", "", "the file is empty; it needs at least a mistral: section"),
    ("only comments", "# nothing\n", "the file is empty; it needs at least a mistral: section"),
    (
        "YAML syntax error",
        "mistral:\n  admin_key: x\n  user_id: [oops\n",
        "line 4 column 1: expected ',' or ']', but got '<stream end>'",
    ),
    (
        "tab indentation",
        "mistral:\n\tadmin_key: x\n",
        "line 2 column 1: found character '\\t' that cannot start any token",
    ),
    ("duplicate key", "engine: {}\nengine: {}\n", "line 2 column 1: duplicate key 'engine'"),
    (
        "unknown tag",
        "mistral: !vault x\n",
        "line 1 column 10: could not determine a constructor for the tag '!vault'",
    ),
    (
        "impossible date",
        "mistral: 2001-02-30\n",
        "invalid YAML value: day is out of range for month",
    ),
    ("recursive alias", "a: &x [*x]\n", "a[0]: contains itself (a recursive YAML alias)"),
    (
        "two documents",
        "a: 1\n---\nb: 2\n",
        "line 2 column 1: expected a single document in the stream, but found another document",
    ),
    (
        "NUL character",
        "mistral: \x00\n",
        "invalid YAML: unacceptable character #x0000: special characters are not allowed",
    ),
    ("nested too deeply", "a: " + "[" * 5000 + "]" * 5000, "the YAML is nested too deeply"),
    ("alias bomb", ALIAS_BOMB, "f[7][8][8][8][8][9]: the document has more than 1000000 values"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES]
)
def test_invalid_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    """Documents that are not a mapping of settings are refused with the file name and a reason."""
    assert str(_load_text(tmp_path, monkeypatch, text)) == f"rotator.yaml: {expected}"


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing file is a ConfigError naming the file as it was given."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("rotator.yaml", env={})
    assert str(caught.value) == "rotator.yaml: cannot read file: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory given as the file is a ConfigError, not an IsADirectoryError."""
    monkeypatch.chdir(tmp_path)
    Path("conf.d").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config("conf.d", env={})
    assert str(caught.value) == "conf.d: cannot read file: Is a directory"


def test_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is not UTF-8 text is refused with the offending byte's offset."""
    monkeypatch.chdir(tmp_path)
    Path("rotator.yaml").write_bytes(b"mistral: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_config("rotator.yaml", env={})
    assert str(caught.value) == "rotator.yaml: not UTF-8 text (byte 9)"


def test_no_path_and_no_variable() -> None:
    """Without a path and without ROTATOR_CONFIG, the error says how to give one."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={})
    assert str(caught.value) == (
        "rotator: no configuration file: pass --config PATH or set ROTATOR_CONFIG"
    )


@pytest.mark.parametrize("content", ["", "\n"], ids=["empty", "only a newline"])
def test_empty_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    """An empty *_file is refused, naming the field and the file."""
    (tmp_path / "token").write_text(content, encoding="utf-8")
    edits: list[Edit] = [
        ("stores.vault-main.auth.token", _MISSING),
        ("stores.vault-main.auth.token_file", str(tmp_path / "token")),
    ]
    error = _load_text(tmp_path, monkeypatch, yaml.safe_dump(_edited(edits), sort_keys=False))
    assert str(error) == (
        "rotator.yaml: stores.vault-main.auth.token_file: the file named by token_file is empty"
    )


SECRET_ID = "s3cret-1d-Qq0pLmN4vB7tR2yU"
UNREADABLE: list[tuple[str, bytes | None, str]] = [
    ("missing", None, "cannot read the file named by secret_id_file: No such file or directory"),
    ("empty", b"", "the file named by secret_id_file is empty"),
    ("not UTF-8", b"\xff", "the file named by secret_id_file is not UTF-8 text"),
    (
        "too large",
        b"x" * (64 << 10 | 1),
        "the file named by secret_id_file is larger than 64 KiB, which no credential is",
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE]
)
def test_secret_given_as_a_file_path_is_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None, expected: str
) -> None:
    """`secret_id_file: ${VAULT_SECRET_ID}` (the secret where its path belongs) is refused with
    a message that names the field but never the path, which here is the secret itself."""
    monkeypatch.chdir(tmp_path)
    if content is not None:
        Path(SECRET_ID).write_bytes(content)
    auth = {"method": "approle", "role_id": "r", "secret_id_file": "${VAULT_SECRET_ID}"}
    Path("rotator.yaml").write_text(
        yaml.safe_dump(_edited([("stores.vault-main.auth", auth)]), sort_keys=False),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config("rotator.yaml", env={"VAULT_SECRET_ID": SECRET_ID})
    assert str(caught.value) == f"rotator.yaml: stores.vault-main.auth.secret_id_file: {expected}"
    assert SECRET_ID not in repr(caught.value)


# A secret put where it does not belong must not be echoed by any message.
LEAKS: list[list[Edit]] = [
    [("mistral.admin_key", [SECRET])],
    [("mistral.admin_key", {"value": SECRET})],
    [("mistral.auth_header", SECRET)],
    [("mistral.timeout", SECRET)],
    [("mistral.user_id", SECRET)],
    [("mistral.admin_url", SECRET)],
    [("mistral.admin_url", f"https://user:{SECRET}@mistral.example")],
    [("stores.vault-main.url", f"https://user:{SECRET}@[::1")],
    [("defaults.schedule", SECRET)],
    [("targets.0.name", SECRET)],
    [("targets.0.destinations.0.store", SECRET)],
    [("stores.vault-main.auth.method", SECRET)],
    [("stores.aws-main.type", SECRET)],
    [("engine.concurrency", SECRET)],
    [("server", {"listen": SECRET})],
    [("state", {"url": SECRET})],
    [("state", {"url": f"postgresql+psycopg://rotator:{SECRET}@db/rotator"}), ("engine", 5)],
]


@pytest.mark.parametrize("edits", LEAKS, ids=[e[0][0] for e in LEAKS])
def test_secret_never_in_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edits: list[Edit]
) -> None:
    """However a secret is misplaced, the error message and the exception never contain it."""
    error = _load_text(tmp_path, monkeypatch, yaml.safe_dump(_edited(edits), sort_keys=False))
    assert str(error).startswith("rotator.yaml: ")
    for rendering in (str(error), repr(error), *map(str, error.args), error.problem):
        assert SECRET not in rendering
    assert error.__cause__ is None
    assert error.__context__ is None


def test_secret_file_content_never_in_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret read from a *_file and then misused is masked in the message."""
    (tmp_path / "key").write_text(SECRET + "\n", encoding="utf-8")
    edits: list[Edit] = [
        ("mistral.admin_key", _MISSING),
        ("mistral.admin_key_file", str(tmp_path / "key")),
        ("targets.0.destinations.0.store", f"${{NAME:-{SECRET}}}"),
    ]
    error = _load_text(tmp_path, monkeypatch, yaml.safe_dump(_edited(edits), sort_keys=False))
    assert str(error).startswith("rotator.yaml: targets[0].destinations[0].store: unknown store")
    assert SECRET not in str(error)
