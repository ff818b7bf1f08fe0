"""``python -m rotator.probe``: the container health check (the image's ``HEALTHCHECK``).

Exit status 0 when the daemon's ``/livez`` answers 200 (its event loop beats, and its lease is
fresh while it leads), 1 otherwise. Every failure is 1, never 2: Docker reserves exit status 2
in health checks. One line on stdout says what was found (Docker keeps it in ``docker inspect``).

The address is ``server.listen`` of the configuration the daemon reads (``--config PATH``, else
``$ROTATOR_CONFIG``). An unspecified host (``0.0.0.0``, ``[::]``) is probed on the loopback
address of its family, so one check works for a daemon listening on loopback only and for one
listening on every interface (what a container needs). A configuration that cannot be loaded
fails the check: the daemon could not be restarted with it either.

Only the standard library speaks HTTP here: the image needs no curl.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from collections.abc import Sequence

from rotator.config import load_config
from rotator.errors import ConfigError
from rotator.logs import scrub

HEALTHY = 0
UNHEALTHY = 1
LIVEZ = "/livez"
_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
_MAX_BODY = 4096


def probe_host(listen_host: str) -> str:
    """The address to probe for a daemon listening on ``listen_host`` (brackets stripped):
    the loopback address of its family when the host is unspecified, else the host itself."""
    return _UNSPECIFIED.get(listen_host, listen_host)


def livez_url(host: str, port: int) -> str:
    """``http://host:port/livez``, with IPv6 brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{LIVEZ}"


def check_livez(host: str, port: int, *, timeout: float) -> tuple[bool, str]:
    """GET ``/livez``: (live, one line saying what was found)."""
    url = livez_url(host, port)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", LIVEZ, headers={"Accept": "application/json"})
        answer = connection.getresponse()
        body = answer.read(_MAX_BODY)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{url}: unreachable ({type(exc).__name__}: {exc})"
    finally:
        connection.close()
    status, reason = _summary(body)
    return answer.status == 200, f"{url}: {answer.status} {status}{reason}"


def _summary(body: bytes) -> tuple[str, str]:
    """``{status, reason}`` of a /livez answer, as ``("ok", "")`` or ``("failing", ": why")``."""
    try:
        data = json.loads(body)
    except ValueError:
        return "(not JSON)", ""
    if not isinstance(data, dict):
        return "(unexpected answer)", ""
    status = str(data.get("status", "?"))
    reason = data.get("reason")
    return status, f": {reason}" if reason and reason != status else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Probe once; the exit status for Docker (0 healthy, 1 unhealthy)."""
    parser = argparse.ArgumentParser(
        prog="python -m rotator.probe",
        description="Exit 0 if the rotator daemon's /livez answers 200, else 1.",
    )
    parser.add_argument("--config", "-c", help="configuration file (default: $ROTATOR_CONFIG)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for an answer (default: 5)"
    )
    try:
        args = parser.parse_args(argv)
        if not 0 < args.timeout <= 3600:
            parser.error("argument --timeout: must be more than 0 and at most 3600 seconds")
    except SystemExit as exc:  # argparse exits 2 on bad usage, which Docker reserves
        return HEALTHY if exc.code in (0, None) else UNHEALTHY
    try:
        server = load_config(args.config).server
    except ConfigError as exc:
        print(f"rotator probe: cannot load the configuration: {scrub(str(exc))}")
        return UNHEALTHY
    if server.port == 0:
        print(
            f"rotator probe: server.listen {server.listen} picks a free port at start, which"
            " cannot be probed; give it a fixed port"
        )
        return UNHEALTHY
    live, line = check_livez(probe_host(server.host), server.port, timeout=args.timeout)
    print(f"rotator probe: {line}")
    return HEALTHY if live else UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["check_livez", "livez_url", "main", "probe_host"]
