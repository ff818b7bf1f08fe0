"""Real containers: the image built by podman from the repository's Dockerfile, and a container
booting systemd. Slow (a base image made with debootstrap, cached by its package list; an image
build): ``pytest -m "not container"`` skips them; ``scripts/test`` runs them beside the rest.

Every ``podman run`` gets :data:`LIMITS`: podman's default raises RLIMIT_NOFILE, which this
sandbox refuses, so the limits are given as they are. Each test writes its timeline to the
session's :class:`Timeline`, printed at the end of the run (the numbers the guides quote).
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from rotator import __version__

REPO = Path(__file__).resolve().parents[2]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
"""The host's CA bundle, the one its pip uses: the build's pip needs it to reach the index."""


def _limits() -> list[str]:
    """At most 4096 files and processes, never above this process's own limits (raising one is
    refused here, and even re-stating the current RLIMIT_NPROC was refused)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 4096)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], 4096)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


LIMITS = _limits()


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("podman")
    if tool is None:
        pytest.fail("podman is missing: scripts/ensure-tools installs it (Debian: podman, runc)")
    result = subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


class Timeline:
    """Lines of measured facts, printed in the terminal summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)


TIMELINE = Timeline()


@pytest.fixture(scope="session")
def timeline() -> Timeline:
    return TIMELINE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMELINE.lines:
        terminalreporter.section("container and systemd timeline")
        for line in TIMELINE.lines:
            terminalreporter.write_line(line)


def base_image(variant: str) -> str:
    """scripts/container-base: a Debian image made by debootstrap (cached by package list)."""
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / "scripts" / "container-base"), variant],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    TIMELINE.add(
        f"base image {variant}: {result.stdout.strip()} ready in"
        f" {time.monotonic() - started:.1f}s{' (built)' if result.stderr else ' (cached)'}"
    )
    return result.stdout.strip()


def revision() -> str:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return head.stdout.strip() or "unknown"


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The repository's Dockerfile built by podman (``--format docker``: the HEALTHCHECK is
    kept) on the Debian base, tagged per worktree. The build's RUN steps see the host's CA
    bundle and a pip.conf naming it (bind mounts: nothing of them stays in the image)."""
    base = base_image("python")
    pip_conf = tmp_path_factory.mktemp("pip") / "pip.conf"
    pip_conf.write_text(f"[global]\ncert = {CA_BUNDLE}\n")
    tag = f"localhost/rotator-test:{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"
    started = time.monotonic()
    podman(
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--build-arg",
        f"REVISION={revision()}",
        "--volume",
        f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "--volume",
        f"{pip_conf}:/etc/pip.conf:ro",
        "--tag",
        tag,
        str(REPO),
        timeout=900,
    )
    TIMELINE.add(f"image {tag} (rotator {__version__}) built in {time.monotonic() - started:.1f}s")
    return tag
