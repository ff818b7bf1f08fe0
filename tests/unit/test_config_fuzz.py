"""Fuzzing load_config: any document gives a Config or one ConfigError line, nothing else."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.config import Config, load_config
from rotator.errors import ConfigError

DEMO = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "demo.yaml").read_text())
KEYS = sorted(
    {
        *DEMO,
        *(key for section in DEMO.values() if isinstance(section, dict) for key in section),
        "admin_key_file", "admin_token", "admin_token_file", "admin_path_prefix", "auth_header",
        "user_email", "timeout", "type", "url", "mount", "namespace", "auth", "method", "token",
        "token_file", "role_id", "secret_id", "secret_id_file", "role", "jwt_path", "ca_cert",
        "verify", "region", "endpoint_url", "name", "workspace_id", "key_name_prefix",
        "adopt_existing", "destinations", "store", "path", "field", "create_missing",
        "kms_key_id", "tags", "schedule", "max_age", "grace", "key_expiration", "drain",
        "jitter", "max_grace", "activation_timeout", "concurrency", "listen", "vault-demo",
    }
)  # fmt: skip
VALUES = [
    "vault", "aws_secrets_manager", "token", "approle", "kubernetes", "bearer", "x-api-key",
    "vault-demo", "aws-demo", "30s", "0s", "-1m", "7d", "every 1m", "every 0s", "0 3 * * 1",
    "61 * * * *", "0 0 31 2 *", "019b2bd7-96e7-7219-8c0b-45a73da50088", "http://127.0.0.1:1",
    "127.0.0.1:0", "${UNSET}", "${UNSET:-x}", "$$", "${", "sqlite:///x.db", "/nonexistent",
    "", "mistral/x", "api_key", "demo-backend",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(VALUES),
    st.text(max_size=12),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
    ),
    max_leaves=25,
)


def _edit(base: Any, path: list[int], value: object) -> object:
    """base with the node reached by following path (indexes mod size) replaced by value."""
    if not path or not isinstance(base, dict | list) or not base:
        return value
    keys = list(base) if isinstance(base, dict) else list(range(len(base)))
    key = keys[path[0] % len(keys)]
    base[key] = _edit(base[key], path[1:], value)
    return base


def _check(directory: Path, text: str) -> None:
    path = directory / "rotator.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path, env={})
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{path}: ")
        assert "\n" not in message
        assert "please report" not in message, message
    else:
        assert isinstance(config, Config)


FUZZ = settings(
    max_examples=65,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text(text: str) -> None:
    """Arbitrary text never raises anything but a one-line ConfigError."""
    with tempfile.TemporaryDirectory() as directory:
        _check(Path(directory), text)


@FUZZ
@given(document=st.dictionaries(st.sampled_from(KEYS), documents, max_size=6))
def test_random_mappings_with_config_keys(document: dict[str, Any]) -> None:
    """Random nested mappings built from real key names give a Config or a ConfigError."""
    with tempfile.TemporaryDirectory() as directory:
        _check(Path(directory), yaml.safe_dump(document))


@FUZZ
@given(path=st.lists(st.integers(min_value=0, max_value=50), max_size=6), value=documents)
def test_mutated_demo_config(path: list[int], value: object) -> None:
    """The demo config with one subtree replaced gives a Config or a ConfigError."""
    document = _edit(copy.deepcopy(DEMO), path, value)
    with tempfile.TemporaryDirectory() as directory:
        _check(Path(directory), yaml.safe_dump(document))
