"""Where the demo runs, and the environment it gives its children and your other shell.

:class:`Settings` reads ``--for``, ``--config`` and the ``ROTATOR_DEMO_*`` variables.
:func:`demo_environment` is what ``config/demo.yaml`` and every child read: the stand-ins' URLs,
the demo directory, the stand-in credentials (moto accepts any, OpenBao's dev root token). The
demo also writes it to ``<ROTATOR_DEMO_DIR>/env`` (:func:`write_env_file`, mode 0600) so that,
sourced in another shell, the CLI (``rotator check``, ``status``…) and ``bao`` reach the running
demo and no AWS credential of that shell reaches moto. Stand-in values only: never a real secret.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

PORTS = {"mistral": 18080, "vault": 18200, "aws": 18500, "http": 9402}
"""Default loopback ports, each overridable by ``ROTATOR_DEMO_<NAME>_PORT``."""
VAULT_TOKEN = "demo-root-token"  # noqa: S105 - the OpenBao dev server's root token, loopback only
ADMIN_TOKEN = "demo-admin-token"  # noqa: S105 - the daemon's on-demand API token in the demo
AWS_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
)
"""AWS variables the env file unsets: another profile, session or role must not replace the
stand-in credentials (the demo process itself drops every ``AWS_*`` variable)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Where and how long the demo runs."""

    config: Path
    directory: Path
    ports: dict[str, int]
    duration: float | None

    @classmethod
    def parse(cls, argv: list[str] | None) -> Settings:
        parser = argparse.ArgumentParser(
            prog="scripts/demo",
            description="Run rotator live against its built-in stand-ins; Ctrl-C stops it.",
        )
        parser.add_argument(
            "--for",
            dest="duration",
            type=float,
            default=_env_float("ROTATOR_DEMO_DURATION"),
            metavar="SECONDS",
            help="stop by itself SECONDS after the first rotation (default:"
            " $ROTATOR_DEMO_DURATION, else run until Ctrl-C)",
        )
        parser.add_argument(
            "--config", type=Path, default=Path("config/demo.yaml"), help="the demo configuration"
        )
        args = parser.parse_args(argv)
        if args.duration is not None and args.duration <= 0:
            parser.error("--for: must be a positive number of seconds")
        ports = {}
        for name, default in PORTS.items():
            variable = port_variable(name)
            value = os.environ.get(variable, str(default))
            if not value.isdigit() or not 0 < int(value) < 65536:
                parser.error(f"{variable}: must be a port number, got {value!r}")
            ports[name] = int(value)
        directory = Path(os.environ.get("ROTATOR_DEMO_DIR") or "var/demo").absolute()
        return cls(args.config, directory, ports, args.duration)

    def url(self, name: str) -> str:
        """The loopback URL of the stand-in ``name`` (mistral, vault, aws)."""
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def env_file(self) -> Path:
        return self.directory / "env"


def port_variable(name: str) -> str:
    """``ROTATOR_DEMO_<NAME>_PORT``: the variable that sets the port of ``name``."""
    return f"ROTATOR_DEMO_{name.upper()}_PORT"


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        print(f"demo: {name}: must be a number of seconds, got {value!r}", file=sys.stderr)
        raise SystemExit(2) from None


def demo_environment(settings: Settings, environ: dict[str, str]) -> dict[str, str]:
    """The variables the demo sets for itself, its children and the env file.

    ``environ`` is the demo's own environment: a ``ROTATOR_DEMO_VAULT_TOKEN`` or
    ``ROTATOR_DEMO_ADMIN_TOKEN`` set there is kept."""
    vault_token = environ.get("ROTATOR_DEMO_VAULT_TOKEN") or VAULT_TOKEN
    return {
        "ROTATOR_DEMO_DIR": str(settings.directory),
        "ROTATOR_DEMO_MISTRAL_URL": settings.url("mistral"),
        "ROTATOR_DEMO_VAULT_URL": settings.url("vault"),
        "ROTATOR_DEMO_AWS_URL": settings.url("aws"),
        "ROTATOR_DEMO_HTTP_PORT": str(settings.ports["http"]),
        "ROTATOR_DEMO_VAULT_TOKEN": vault_token,
        "ROTATOR_DEMO_ADMIN_TOKEN": environ.get("ROTATOR_DEMO_ADMIN_TOKEN") or ADMIN_TOKEN,
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "BAO_ADDR": settings.url("vault"),
        "BAO_TOKEN": vault_token,
    }


def write_env_file(path: Path, variables: dict[str, str], *, bin_dir: Path | None) -> None:
    """Write ``variables`` as a shell file to source, mode 0600; ``bin_dir`` (where ``rotator``
    is installed) goes first on ``PATH``."""
    lines = [
        "# Written by scripts/demo for the demo it runs: stand-in values only, loopback only.",
        "# In another shell: source this file, then rotator --config config/demo.yaml status",
        f"unset {' '.join(AWS_UNSET)}",
        *(f"export {name}={shlex.quote(value)}" for name, value in variables.items()),
    ]
    if bin_dir is not None:
        lines.append(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"')
    path.unlink(missing_ok=True)  # a new file, so the mode below applies
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
