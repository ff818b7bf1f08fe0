"""The container health check (``python -m rotator.probe``) against a real loopback server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rotator.probe import DEFAULT_LISTEN, configured_listen, main, probe_host

MINIMAL = """\
mistral:
  admin_key: sk-probe-admin-key-0123456789
  user_id: 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce
"""


class Livez:
    """A loopback HTTP server whose ``/livez`` answers what the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.body: dict[str, str] = {"status": "ok", "reason": "ok"}
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                payload = json.dumps(owner.body).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Livez:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def livez() -> Iterator[Livez]:
    with Livez() as server:
        yield server


def write_config(tmp_path: Path, listen: str) -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(MINIMAL + f"server:\n  listen: '{listen}'\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("listen_host", "probed"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("::", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("10.1.2.3", "10.1.2.3"),
        ("rotator.internal", "rotator.internal"),
    ],
)
def test_unspecified_hosts_are_probed_on_loopback(listen_host: str, probed: str) -> None:
    """A wildcard listen address is probed on its family's loopback; any other host as is."""
    assert probe_host(listen_host) == probed


def test_live_daemon_on_every_interface_is_healthy(
    tmp_path: Path, livez: Livez, capsys: pytest.CaptureFixture[str]
) -> None:
    """listen 0.0.0.0:PORT (the container setting): /livez on 127.0.0.1:PORT answers 200 → 0."""
    config = write_config(tmp_path, f"0.0.0.0:{livez.port}")
    assert main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out == f"rotator probe: http://127.0.0.1:{livez.port}/livez: 200 ok\n"
    assert livez.paths == ["/livez"]


def test_config_comes_from_rotator_config_env(
    tmp_path: Path, livez: Livez, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --config the probe reads $ROTATOR_CONFIG, as the daemon does."""
    monkeypatch.setenv("ROTATOR_CONFIG", str(write_config(tmp_path, f"127.0.0.1:{livez.port}")))
    assert main([]) == 0
    assert livez.paths == ["/livez"]


def test_failing_livez_is_unhealthy_with_its_reason(
    tmp_path: Path, livez: Livez, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 503 from /livez exits 1 and the line carries the daemon's reason."""
    livez.status = 503
    livez.body = {"status": "failing", "reason": "heartbeat 31s old"}
    assert main(["--config", str(write_config(tmp_path, f"127.0.0.1:{livez.port}"))]) == 1
    assert capsys.readouterr().out.endswith("/livez: 503 failing: heartbeat 31s old\n")


def test_nothing_listening_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No daemon on the configured port: exit 1 and an 'unreachable' line."""
    port = free_port()
    assert main(["--config", str(write_config(tmp_path, f"127.0.0.1:{port}"))]) == 1
    assert f"http://127.0.0.1:{port}/livez: unreachable" in capsys.readouterr().out


def test_port_zero_cannot_be_probed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """server.listen with port 0 is reported as unprobeable (exit 1), not guessed."""
    assert main(["--config", str(write_config(tmp_path, "127.0.0.1:0"))]) == 1
    assert "give it a fixed port" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "ftp://127.0.0.1:9402/livez"],
        ["--timeout", "0"],
        ["--no-such-option"],
    ],
)
def test_every_failure_exits_1_never_docker_reserved_2(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad --url or bad usage exits 1: Docker reserves 2 in health checks."""
    monkeypatch.delenv("ROTATOR_CONFIG", raising=False)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert len((captured.out + captured.err).strip().splitlines()) <= 2


def test_only_server_listen_is_read_not_secrets_nor_the_rest(
    tmp_path: Path, livez: Livez, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration whose secret file is missing and whose other settings are invalid (an edit
    the daemon has not reloaded) still probes the running daemon: healthy, exit 0; the port comes
    through ``${NAME}`` expansion as the daemon's loader does it."""
    monkeypatch.setenv("PROBE_PORT", str(livez.port))
    config = tmp_path / "rotator.yaml"
    config.write_text(
        "mistral:\n  admin_key_file: /nonexistent/mistral-admin-key\n"
        "targets: not-a-list\n"
        "server:\n  listen: 127.0.0.1:${PROBE_PORT}\n  admin_token_file: /nonexistent/token\n"
    )
    assert main(["--config", str(config)]) == 0
    assert livez.paths == ["/livez"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, None),
        ("targets: []\n", None),
        ("server: {listen: no-port-here}\n", "server.listen"),
        ("server: {listen: '${UNSET_PROBE_VAR}'}\n", "UNSET_PROBE_VAR"),
        ("server: [unbalanced\n", "line 3"),
    ],
    ids=["no-config", "no-server-section", "invalid", "unset-variable", "bad-yaml"],
)
def test_unreadable_listen_falls_back_to_the_default_and_says_why(
    tmp_path: Path, text: str | None, problem: str | None
) -> None:
    """No configuration, no server.listen, or one that cannot be read: the default address
    (127.0.0.1:9402), with a note naming the problem when there is one and no secret in it."""
    path = None
    if text is not None:
        path = tmp_path / "rotator.yaml"
        path.write_text("mistral: {admin_key: sk-probe-admin-key-0123456789}\n" + text)
    listen, note = configured_listen(str(path) if path else None, {})
    assert listen == DEFAULT_LISTEN == "127.0.0.1:9402"
    if problem is None:
        assert note == ""
    else:
        assert problem in note
        assert "sk-probe-admin-key" not in note


def test_url_overrides_the_configuration(
    tmp_path: Path, livez: Livez, capsys: pytest.CaptureFixture[str]
) -> None:
    """--url probes that URL (path default /livez) and reads no configuration at all."""
    missing = tmp_path / "missing.yaml"
    assert main(["--config", str(missing), "--url", f"http://127.0.0.1:{livez.port}"]) == 0
    assert main(["--url", f"http://127.0.0.1:{livez.port}/livez"]) == 0
    assert livez.paths == ["/livez", "/livez"]
    assert "missing.yaml" not in capsys.readouterr().out
