"""Valid configurations: defaults, inheritance, environment expansion, secret files, examples."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rotator.config import Config, Policy, Target, load_config, parse_config
from rotator.destinations.aws.schema import AwsDestination, AwsSecretsManagerStore
from rotator.destinations.vault.schema import TokenAuth, VaultDestination, VaultStore
from rotator.errors import ConfigError
from rotator.schedule import Schedule
from rotator.secret import Secret

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """\
mistral:
  admin_key: sk-minimal-admin-key
  user_id: 9C0AB39F-0CD0-46CD-BD30-8BF2D50BE5CE
"""
STORES = """\
stores:
  vault-main:
    type: vault
    url: https://vault.example:8200/
    auth: {method: token, token: hvs.token}
  aws-main:
    type: aws_secrets_manager
    region: eu-west-1
"""


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "rotator.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=env or {})


def _load_with_stores(tmp_path: Path, text: str) -> Config:
    """MINIMAL plus the two STORES plus text."""
    return _load(tmp_path, MINIMAL + STORES + text)


def test_minimal_config_has_contract_defaults(tmp_path: Path) -> None:
    """Only mistral.admin_key and user_id are required; everything else has documented defaults."""
    config = _load(tmp_path, MINIMAL)
    assert config.mistral.admin_url == "https://api.mistral.ai"
    assert config.mistral.admin_path_prefix == "/v1/admin"
    assert config.mistral.api_url == "https://api.mistral.ai"
    assert config.mistral.auth_header == "bearer"
    assert config.mistral.user_id == "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce"
    assert config.mistral.timeout == timedelta(seconds=10)
    assert config.state.url == "sqlite:////var/lib/rotator/state.db"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9402)
    assert config.server.admin_token is None
    assert config.stores == {}
    assert config.engine.concurrency == 8
    assert config.targets == ()
    assert config.defaults == Policy(
        schedule=Schedule.parse("0 3 * * 1"),
        max_age=timedelta(days=30),
        grace=timedelta(hours=1),
        key_expiration=timedelta(days=45),
        activation_timeout=timedelta(minutes=2),
        max_grace=timedelta(days=7),
        drain=False,
        jitter=timedelta(minutes=5),
    )


def test_source_is_the_name_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Config.source is the path as the caller gave it, str or PathLike."""
    monkeypatch.chdir(tmp_path)
    Path("rotator.yaml").write_text(MINIMAL, encoding="utf-8")
    assert load_config("rotator.yaml", env={}).source == "rotator.yaml"
    assert load_config(Path("rotator.yaml"), env={}).source == "rotator.yaml"


def test_path_from_rotator_config_variable(tmp_path: Path) -> None:
    """With no path, ROTATOR_CONFIG from the environment names the file."""
    (tmp_path / "rotator.yaml").write_text(MINIMAL, encoding="utf-8")
    config = load_config(None, env={"ROTATOR_CONFIG": str(tmp_path / "rotator.yaml")})
    assert config.source == str(tmp_path / "rotator.yaml")


def test_targets_inherit_defaults_and_overrides_win(tmp_path: Path) -> None:
    """A target's policy is defaults plus its own fields; key_expiration: null overrides too."""
    config = _load_with_stores(
        tmp_path,
        """\
defaults:
  schedule: every 14d
  grace: 2h
targets:
  - name: inherits
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50088
    destinations: [{store: vault-main, path: m/inherits, field: api_key}]
  - name: overrides
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50089
    schedule: "30 4 * * *"
    grace: 0s
    key_expiration: null
    drain: true
    destinations: [{store: vault-main, path: m/overrides, field: api_key}]
""",
    )
    inherits, overrides = config.targets
    assert inherits.policy == config.defaults
    assert inherits.policy.grace == timedelta(hours=2)
    assert str(inherits.policy.schedule) == "every 14d"
    assert overrides.policy.grace == timedelta(0)
    assert overrides.policy.key_expiration is None
    assert overrides.policy.drain is True
    assert str(overrides.policy.schedule) == "30 4 * * *"
    assert overrides.policy.max_age == config.defaults.max_age
    assert config.target("overrides") is overrides
    assert inherits.key_name_prefix == "rotator-inherits"


def test_shared_target_takes_each_configs_defaults(tmp_path: Path) -> None:
    """A Target instance reused in another Config gets that Config's defaults, not the first's."""
    first = _load_with_stores(
        tmp_path,
        """\
targets:
  - name: a
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50088
    destinations: [{store: aws-main, secret_id: m/a}]
""",
    )
    second = Config(
        mistral=first.mistral,
        stores=first.stores,
        defaults=Policy(grace=timedelta(minutes=10)),
        targets=first.targets,
    )
    assert second.targets[0].policy.grace == timedelta(minutes=10)
    assert first.targets[0].policy.grace == timedelta(hours=1)


def test_destination_kind_follows_the_store(tmp_path: Path) -> None:
    """A destination naming a vault store is a VaultDestination; an AWS store, an AwsDestination."""
    config = _load_with_stores(
        tmp_path,
        """\
targets:
  - name: both
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50088
    key_name_prefix: Prod-Backend-2
    destinations:
      - {store: vault-main, path: /mistral/both/, field: api_key, create_missing: true}
      - store: aws-main
        secret_id: mistral/both
        kms_key_id: alias/rotator
        tags: {team: platform}
""",
    )
    vault, aws = config.targets[0].destinations
    assert isinstance(vault, VaultDestination)
    assert (vault.path, vault.field, vault.create_missing) == ("mistral/both", "api_key", True)
    assert isinstance(aws, AwsDestination)
    assert (aws.field, aws.kms_key_id, aws.tags) == (None, "alias/rotator", {"team": "platform"})
    assert isinstance(config.store_of(vault), VaultStore)
    assert isinstance(config.store_of(aws), AwsSecretsManagerStore)
    assert config.targets[0].key_name_prefix == "Prod-Backend-2"
    store = config.stores["vault-main"]
    assert isinstance(store, VaultStore)
    assert store.url == "https://vault.example:8200"
    assert (store.mount, store.namespace, store.verify) == ("secret", None, True)


def test_environment_expansion(tmp_path: Path) -> None:
    """${NAME}, ${NAME:-default} (unset or empty), $$ and a lone $ expand as documented."""
    config = _load(
        tmp_path,
        """\
mistral:
  admin_key: ${KEY}
  admin_url: ${URL:-http://127.0.0.1:18080}
  api_url: ${EMPTY:-http://fallback:1}
  user_id: 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce
state:
  url: sqlite:///${DIR}/$${literal}-$x.db
server:
  listen: ${HOST:-127.0.0.1}:${PORT:-0}
""",
        env={"KEY": "sk-from-env", "EMPTY": "", "DIR": "/data", "PORT": "8080"},
    )
    assert config.mistral.admin_key.reveal() == "sk-from-env"
    assert config.mistral.admin_url == "http://127.0.0.1:18080"
    assert config.mistral.api_url == "http://fallback:1"
    assert config.state.url == "sqlite:////data/${literal}-$x.db"
    assert config.server.listen == "127.0.0.1:8080"


def test_set_variable_wins_over_default(tmp_path: Path) -> None:
    """${NAME:-default} uses NAME when it is set and not empty."""
    config = _load(
        tmp_path,
        MINIMAL + "server:\n  admin_token: ${TOKEN:-not-this}\n",
        env={"TOKEN": "tok-from-env"},
    )
    assert config.server.admin_token == Secret("tok-from-env")


def test_secret_files_are_read(tmp_path: Path) -> None:
    """*_file fields hold the file's content minus one trailing newline, as a Secret."""
    (tmp_path / "admin").write_text("sk-from-file\n", encoding="utf-8")
    (tmp_path / "token").write_text("hvs.from-file\n\n", encoding="utf-8")
    (tmp_path / "api").write_text("api-token", encoding="utf-8")
    config = _load(
        tmp_path,
        f"""\
mistral:
  admin_key_file: {tmp_path / "admin"}
  user_email: bot@example.com
server:
  admin_token_file: {tmp_path / "api"}
stores:
  v:
    type: vault
    url: http://127.0.0.1:8200
    auth: {{method: token, token_file: "{tmp_path / "token"}"}}
""",
    )
    assert config.mistral.admin_key.reveal() == "sk-from-file"
    assert config.mistral.user_id is None
    assert config.mistral.user_email == "bot@example.com"
    assert config.server.admin_token == Secret("api-token")
    store = config.stores["v"]
    assert isinstance(store, VaultStore)
    assert isinstance(store.auth, TokenAuth)
    assert store.auth.token.reveal() == "hvs.from-file\n"


def test_the_audit_hmac_key_is_a_secret_file_of_32_characters_or_more(tmp_path: Path) -> None:
    """audit.hmac_key_file is read like every other secret file; absent, rows are unkeyed; a
    key shorter than 32 characters is refused with the field named and the key not repeated."""
    assert _load(tmp_path, MINIMAL).audit.hmac_key is None
    key_file = tmp_path / "audit-key"
    key_file.write_text("a" * 64 + "\n", encoding="utf-8")
    config = _load(tmp_path, MINIMAL + f"audit:\n  hmac_key_file: {key_file}\n")
    assert config.audit.hmac_key == Secret("a" * 64)
    assert "a" * 64 not in repr(config)
    key_file.write_text("short-hmac-key-value", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, MINIMAL + f"audit:\n  hmac_key_file: {key_file}\n")
    assert str(refused.value).endswith(
        "audit.hmac_key: must be at least 32 characters, like the output of `openssl rand -hex 32`"
    )
    assert "short-hmac-key-value" not in str(refused.value)


def test_secrets_never_print(tmp_path: Path) -> None:
    """repr, str and JSON dumps of a loaded config carry *** instead of every secret."""
    config = _load(tmp_path, MINIMAL + STORES + "server:\n  admin_token: tok-0123456789\n")
    for rendering in (repr(config), str(config), config.model_dump_json()):
        for secret in ("sk-minimal-admin-key", "hvs.token", "tok-0123456789"):
            assert secret not in rendering
    assert config.model_dump(mode="json")["mistral"]["admin_key"] == "***"


def test_dump_uses_the_file_notation(tmp_path: Path) -> None:
    """Durations and schedules serialise back to the text operators write."""
    dumped = _load(tmp_path, MINIMAL).model_dump(mode="json")["defaults"]
    assert dumped["schedule"] == "0 3 * * 1"
    assert (dumped["max_age"], dumped["grace"], dumped["jitter"]) == ("30d", "1h", "5m")


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("0.0.0.0:9402", "0.0.0.0", 9402),
        ("[::1]:0", "::1", 0),
        ("rotator.local:80", "rotator.local", 80),
    ],
)
def test_listen_addresses(tmp_path: Path, listen: str, host: str, port: int) -> None:
    """server.listen splits into host and port; IPv6 hosts go in brackets; port 0 is allowed."""
    config = _load(tmp_path, MINIMAL + f"server:\n  listen: '{listen}'\n")
    assert (config.server.host, config.server.port) == (host, port)


def test_vault_auth_methods(tmp_path: Path) -> None:
    """AppRole and Kubernetes auth take their documented defaults."""
    ca = tmp_path / "vault.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    config = _load(
        tmp_path,
        MINIMAL
        + f"""\
stores:
  a:
    type: vault
    url: http://127.0.0.1:8200
    auth: {{method: approle, role_id: r, secret_id: s3cret}}
  k:
    type: vault
    url: http://127.0.0.1:8200
    namespace: team-a
    ca_cert: {ca}
    timeout: 3s
    auth: {{method: kubernetes, role: rotator}}
""",
    )
    approle, kube = config.stores["a"], config.stores["k"]
    assert isinstance(approle, VaultStore)
    assert isinstance(kube, VaultStore)
    assert approle.auth.method == "approle"
    assert approle.auth.mount == "approle"
    assert kube.auth.method == "kubernetes"
    assert kube.auth.mount == "kubernetes"
    assert str(kube.auth.jwt_path) == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert (kube.namespace, kube.ca_cert, kube.timeout) == (
        "team-a",
        ca,
        timedelta(seconds=3),
    )


def test_parse_config_takes_a_mapping() -> None:
    """parse_config validates an in-memory document the same way, naming it by source."""
    config = parse_config(
        {"mistral": {"admin_key": "${K}", "user_id": "9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce"}},
        source="inline",
        env={"K": "sk-inline"},
    )
    assert (config.source, config.mistral.admin_key.reveal()) == ("inline", "sk-inline")


def test_standalone_target_uses_builtin_defaults() -> None:
    """A Target validated on its own merges its overrides onto the built-in Policy defaults."""
    target = Target.model_validate(
        {
            "name": "solo",
            "workspace_id": "019b2bd7-96e7-7219-8c0b-45a73da50088",
            "grace": "5m",
            "destinations": [{"store": "any", "secret_id": "s"}],
        }
    )
    assert target.policy.grace == timedelta(minutes=5)
    assert target.policy.max_age == Policy().max_age
    assert isinstance(target.destinations[0], AwsDestination)


def test_example_config_loads(tmp_path: Path) -> None:
    """config/rotator.example.yaml is valid once its variables and secret file exist."""
    (tmp_path / "vault-secret-id").write_text("secret-id\n", encoding="utf-8")
    config = load_config(
        REPO / "config" / "rotator.example.yaml",
        env={
            "MISTRAL_ADMIN_KEY": "sk-example",
            "ROTATOR_ADMIN_TOKEN": "admin-token",
            "VAULT_TOKEN": "hvs.example",
            "ROTATOR_SECRETS_DIR": str(tmp_path),
            "ROTATOR_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        },
    )
    assert [t.name for t in config.targets] == ["prod-backend", "batch-jobs"]
    assert config.notifications.webhooks[0].format == "slack"
    assert config.leader.election == "auto"
    assert set(config.stores) == {"vault-main", "vault-approle", "vault-k8s", "aws-main"}
    assert config.targets[1].policy.drain is True


def test_demo_config_loads_with_and_without_overrides() -> None:
    """config/demo.yaml loads with no environment, and its addresses follow the variables."""
    demo = REPO / "config" / "demo.yaml"
    config = load_config(demo, env={})
    assert config.mistral.admin_url == config.mistral.api_url == "http://127.0.0.1:18080"
    assert config.mistral.admin_key.reveal() == "standin-admin-key"
    # An operator's real admin key in the environment is never sent to the stand-in.
    operator = load_config(demo, env={"MISTRAL_ADMIN_KEY": "sk-operator-real-admin-key"})
    assert operator.mistral.admin_key.reveal() == "standin-admin-key"
    chosen = load_config(demo, env={"ROTATOR_DEMO_ADMIN_KEY": "demo-key-2"})
    assert chosen.mistral.admin_key.reveal() == "demo-key-2"
    assert config.state.url == "sqlite:///./var/demo/state.db"
    assert [t.name for t in config.targets] == ["demo-backend", "demo-batch", "demo-analytics"]
    assert all(len(t.destinations) == 2 for t in config.targets)
    assert config.defaults.schedule.interval == timedelta(minutes=1)
    assert config.defaults.key_expiration == timedelta(days=1)
    moved = load_config(
        demo,
        env={
            "ROTATOR_DEMO_MISTRAL_URL": "http://127.0.0.1:5000",
            "ROTATOR_DEMO_DIR": "/tmp/demo",
            "ROTATOR_DEMO_VAULT_URL": "http://127.0.0.1:5001",
            "ROTATOR_DEMO_AWS_URL": "http://127.0.0.1:5002",
        },
    )
    assert moved.mistral.admin_url == "http://127.0.0.1:5000"
    assert moved.state.url == "sqlite:////tmp/demo/state.db"
    vault, aws = moved.stores["vault-demo"], moved.stores["aws-demo"]
    assert isinstance(vault, VaultStore)
    assert isinstance(aws, AwsSecretsManagerStore)
    assert (vault.url, aws.endpoint_url) == ("http://127.0.0.1:5001", "http://127.0.0.1:5002")
