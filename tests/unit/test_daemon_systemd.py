"""The sd_notify protocol against a real AF_UNIX datagram socket, and credentials from systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.config import load_config
from rotator.daemon.systemd import SystemdNotifier
from rotator.errors import ConfigError


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound where systemd's NOTIFY_SOCKET would be."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield str(path), sock
    finally:
        sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_stopping_reach_the_socket(notify_socket: tuple[str, socket.socket]) -> None:
    """READY=1 with STATUS, a STATUS line, and STOPPING=1 arrive as one datagram each."""
    path, sock = notify_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("leading: 2 target(s)")
    assert received(sock) == {"READY": "1", "STATUS": "leading: 2 target(s)"}
    assert notifier.status("standby")
    assert received(sock) == {"STATUS": "standby"}
    assert notifier.stopping("stopping: 1 rotation(s) in flight")
    assert received(sock) == {"STOPPING": "1", "STATUS": "stopping: 1 rotation(s) in flight"}
    notifier.close()


def test_reloading_carries_the_monotonic_time(notify_socket: tuple[str, socket.socket]) -> None:
    """RELOADING=1 (Type=notify-reload) comes with MONOTONIC_USEC, as systemd requires."""
    path, sock = notify_socket
    notifier = SystemdNotifier(path)
    assert notifier.reloading()
    message = received(sock)
    assert message["RELOADING"] == "1"
    assert int(message["MONOTONIC_USEC"]) > 0
    notifier.close()


def test_abstract_namespace_socket() -> None:
    """An address starting with '@' names a socket in the abstract namespace."""
    name = f"rotator-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        notifier = SystemdNotifier(f"@{name}")
        assert notifier.ready("up")
        assert received(sock)["READY"] == "1"
        notifier.close()
    finally:
        sock.close()


def test_watchdog_pings_only_when_asked(notify_socket: tuple[str, socket.socket]) -> None:
    """WATCHDOG=1 is sent only with WATCHDOG_USEC, at half its period, and only for our pid."""
    path, sock = notify_socket
    silent = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert silent.watchdog_interval is None
    assert not silent.watchdog()
    mine = SystemdNotifier.from_env(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_interval == 10.0
    assert mine.watchdog()
    assert received(sock) == {"WATCHDOG": "1"}
    parents = SystemdNotifier.from_env(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}
    )
    assert parents.watchdog_interval is None
    for notifier in (silent, mine, parents):
        notifier.close()


def test_without_systemd_nothing_is_sent() -> None:
    """No NOTIFY_SOCKET (or an unsupported kind) makes every call a no-op that says so."""
    for env in ({}, {"NOTIFY_SOCKET": "vsock:2:1234"}):
        notifier = SystemdNotifier.from_env(env)
        assert not notifier.enabled
        assert not notifier.ready("up")
        assert not notifier.watchdog()


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    """A socket that went away makes a send report False, never raise."""
    notifier = SystemdNotifier(str(tmp_path / "gone.sock"))
    assert not notifier.ready("up")
    notifier.close()


def test_admin_key_from_credentials_directory(tmp_path: Path) -> None:
    """admin_key_file: ${CREDENTIALS_DIRECTORY}/mistral-admin-key reads systemd's credential."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mistral-admin-key").write_text("admin-key-from-systemd\n")
    (creds / "admin-token").write_text("api-token\n")
    cfg_file = tmp_path / "rotator.yaml"
    cfg_file.write_text(
        "mistral:\n"
        "  admin_key_file: ${CREDENTIALS_DIRECTORY}/mistral-admin-key\n"
        "  user_id: 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce\n"
        "server:\n"
        "  admin_token_file: ${CREDENTIALS_DIRECTORY}/admin-token\n"
    )
    cfg = load_config(cfg_file, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.mistral.admin_key.reveal() == "admin-key-from-systemd"
    assert cfg.server.admin_token is not None
    assert cfg.server.admin_token.reveal() == "api-token"


def test_credentials_directory_unset_is_named(tmp_path: Path) -> None:
    """Outside systemd the configuration error names the missing variable."""
    cfg_file = tmp_path / "rotator.yaml"
    cfg_file.write_text(
        "mistral:\n"
        "  admin_key_file: ${CREDENTIALS_DIRECTORY}/mistral-admin-key\n"
        "  user_id: 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce\n"
    )
    with pytest.raises(ConfigError, match="environment variable CREDENTIALS_DIRECTORY is not set"):
        load_config(cfg_file, env={})
