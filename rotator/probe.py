"""``python -m rotator.probe``: the container health check (the image's ``HEALTHCHECK``).

Exit status 0 when the daemon's ``/livez`` answers 200 (its event loop beats, and its lease is
fresh while it leads), 1 otherwise. Every failure is 1, never 2: Docker reserves exit status 2
in health checks. One line on stdout says what was found (Docker keeps it in ``docker inspect``).

The address is ``--url``, else ``server.listen`` of the configuration the daemon reads
(``--config PATH``, else ``$ROTATOR_CONFIG``), else rotator's default ``127.0.0.1:9402``. Only
that one field is read (the YAML, then ``${NAME}`` expansion of its value): never the rest of
the configuration, never a ``*_file`` secret. The probe checks the *running* daemon, which keeps
the configuration it loaded: a configuration edited since (and not yet reloaded), even an
invalid one, or a secret file briefly missing, must not mark it unhealthy. When server.listen
cannot be read, the default address is probed and the line says why. An unspecified host
(``0.0.0.0``, ``[::]``) is probed on the loopback address of its family, so one check works for
a daemon listening on loopback only and for one listening on every interface (what a container
needs).

Only the standard library speaks HTTP here: the image needs no curl.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.parse
from collections.abc import Mapping, Sequence

from rotator.config import CONFIG_ENV, ServerSettings, read_listen
from rotator.errors import ConfigError
from rotator.logs import scrub

HEALTHY = 0
UNHEALTHY = 1
LIVEZ = "/livez"
_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
_MAX_BODY = 4096
DEFAULT_LISTEN: str = ServerSettings.model_fields["listen"].default


def probe_host(listen_host: str) -> str:
    """The address to probe for a daemon listening on ``listen_host`` (brackets stripped):
    the loopback address of its family when the host is unspecified, else the host itself."""
    return _UNSPECIFIED.get(listen_host, listen_host)


def livez_url(host: str, port: int) -> str:
    """``http://host:port/livez``, with IPv6 brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{LIVEZ}"


def configured_listen(path: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """``server.listen`` of the configuration at ``path`` (None: ``$ROTATOR_CONFIG``), read
    alone, and a note: ``""`` when it was read, else why :data:`DEFAULT_LISTEN` stands in."""
    source = path or env.get(CONFIG_ENV)
    if not source:
        return DEFAULT_LISTEN, ""
    try:
        return read_listen(source, env) or DEFAULT_LISTEN, ""
    except ConfigError as exc:
        return DEFAULT_LISTEN, f" (server.listen not read, so the default: {scrub(str(exc))})"


def parse_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an ``http://host[:port][/path]`` URL; the path defaults to
    ``/livez``, the port to 80. ValueError for anything else."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"--url must be http://host:port[/path], got {url!r}")
    return parts.hostname, parts.port or 80, parts.path or LIVEZ


def check_livez(host: str, port: int, *, timeout: float, path: str = LIVEZ) -> tuple[bool, str]:
    """GET ``path`` (``/livez``): (live, one line saying what was found)."""
    url = livez_url(host, port).removesuffix(LIVEZ) + path
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
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
        usage="%(prog)s [--config FILE | --url URL] [--timeout SECONDS]",
        description="Exit 0 if the rotator daemon's /livez answers 200, else 1.",
    )
    parser.add_argument(
        "--config",
        "-c",
        help="configuration file whose server.listen to probe (default: $ROTATOR_CONFIG)",
    )
    parser.add_argument(
        "--url", help="probe this http:// URL instead (path default: /livez); no config is read"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for an answer (default: 5)"
    )
    try:
        args = parser.parse_args(argv)
        if not 0 < args.timeout <= 3600:
            parser.error("argument --timeout: must be more than 0 and at most 3600 seconds")
    except SystemExit as exc:  # argparse exits 2 on bad usage, which Docker reserves
        return HEALTHY if exc.code in (0, None) else UNHEALTHY
    note = ""
    if args.url is not None:
        try:
            host, port, path = parse_url(args.url)
        except ValueError as exc:
            print(f"rotator probe: {exc}")
            return UNHEALTHY
    else:
        listen, note = configured_listen(args.config, os.environ)
        server = ServerSettings(listen=listen)
        if server.port == 0:
            print(
                f"rotator probe: server.listen {server.listen} picks a free port at start, which"
                " cannot be probed; give it a fixed port or pass --url"
            )
            return UNHEALTHY
        host, port, path = probe_host(server.host), server.port, LIVEZ
    live, line = check_livez(host, port, timeout=args.timeout, path=path)
    print(f"rotator probe: {line}{note}")
    return HEALTHY if live else UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["check_livez", "configured_listen", "livez_url", "main", "parse_url", "probe_host"]
