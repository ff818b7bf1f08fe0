"""What a command imports: ``rotator --version`` the standard library alone, ``rotator status``
neither the backends' SDKs nor the HTTP server (issue 14: start-up time and memory).

Each case runs the command in a fresh interpreter through the console script's entry point
(``rotator.__main__:main``) and reads ``sys.modules`` afterwards; nothing is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from rotator import __version__
from tests.unit.test_cli_inputs import _config, _make_state

REPO = Path(__file__).resolve().parents[2]

HEAVY = (
    "typer",
    "click",
    "rich",
    "structlog",
    "pydantic",
    "yaml",
    "sqlalchemy",
    "asyncio",
    "boto3",
    "botocore",
    "hvac",
    "requests",
    "httpx",
    "ssl",
    "uvicorn",
    "starlette",
    "apscheduler",
    "prometheus_client",
    "rotator.cli",
    "rotator.config",
)
"""Nothing ``--version`` needs (each of these costs from 10 to 300 ms to import)."""

BACKENDS_AND_SERVER = (
    "boto3",
    "botocore",
    "hvac",
    "requests",
    "httpx",
    "uvicorn",
    "starlette",
    "prometheus_client",
    "rotator.destinations.aws.destination",  # a kind's runtime (its package's __init__ and
    "rotator.destinations.vault.destination",  # schema are configuration: they stay cheap)
    "rotator.mistral.admin",
    "rotator.daemon.runner",
    "rich",
    "pygments",
)
"""What ``rotator status`` reads the state store without: the SDKs, the Mistral client, the
HTTP server and the daemon; and rich, which structlog would load for renderers rotator does
not use (:func:`rotator.__main__._leave_out_unused_extras`)."""

PROBE = """
import json, sys
from rotator.__main__ import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
print(json.dumps({"code": code, "modules": loaded}), file=sys.stderr)
"""


def imports_of(*argv: str) -> tuple[int, set[str], str]:
    """Run ``rotator ARGV`` in a new interpreter: its exit status, the modules it imported, and
    its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), done.stdout


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The names (or any of their submodules) found in ``modules``."""
    return [n for n in names if any(m == n or m.startswith(f"{n}.") for m in modules)]


def test_the_console_script_is_the_small_entry_point() -> None:
    """pyproject's ``rotator`` script is rotator.__main__:main, which ``python -m`` runs too."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"rotator": "rotator.__main__:main"}


def test_python_dash_m_runs_the_same_entry_point() -> None:
    """``python -m rotator`` answers like the console script (``--version``, then a command)."""
    for argv, expected in ((["--version"], f"rotator {__version__}"), (["--help"], "Usage:")):
        done = subprocess.run(
            [sys.executable, "-m", "rotator", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout


def test_version_imports_none_of_the_heavy_modules() -> None:
    """``rotator --version`` answers from the standard library alone."""
    code, modules, out = imports_of("--version")
    assert (code, out.strip()) == (0, f"rotator {__version__}")
    assert loaded(modules, HEAVY) == []


def test_status_imports_neither_backend_sdks_nor_the_http_server(tmp_path: Path) -> None:
    """``rotator status`` (a Vault and an AWS destination configured) reads the state store
    without importing boto3, hvac, httpx, the HTTP server, the daemon or rich."""
    cfg = _config(tmp_path)
    _make_state(tmp_path / "state.db")
    code, modules, out = imports_of("status", "--json", "--config", str(cfg))
    assert code == 0
    assert [row["target"] for row in json.loads(out)] == ["prod-backend"]
    assert loaded(modules, BACKENDS_AND_SERVER) == []
