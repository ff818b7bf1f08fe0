"""systemd integration of ``rotator run``: the ``Type=notify`` protocol and credentials.

**Notify.** Under ``Type=notify`` (or ``notify-reload``) systemd passes ``$NOTIFY_SOCKET``, an
``AF_UNIX`` datagram socket (a path, or ``@name`` in the abstract namespace). Each message is one
datagram of ``KEY=VALUE`` lines (sd_notify(3)). rotator sends ``READY=1`` once its configuration,
credentials, state store and scheduler are up; ``WATCHDOG=1`` from the event-loop heartbeat when
``$WATCHDOG_USEC`` is set (so a wedged loop gets the service restarted); ``RELOADING=1`` and then
``READY=1`` around a SIGHUP reload; ``STOPPING=1`` on SIGTERM; and ``STATUS=`` lines that
``systemctl status`` shows. Without ``$NOTIFY_SOCKET`` every call is a no-op.

**Credentials.** ``LoadCredential=`` / ``LoadCredentialEncrypted=`` place secrets in a private
directory named by ``$CREDENTIALS_DIRECTORY``. The configuration reads them with the ``*_file``
form of any secret field, and ``${NAME}`` expansion supplies the directory::

    # rotator.service
    LoadCredential=mistral-admin-key:/etc/rotator/mistral-admin-key
    LoadCredential=vault-token:/etc/rotator/vault-token

    # rotator.yaml
    mistral:
      admin_key_file: ${CREDENTIALS_DIRECTORY}/mistral-admin-key
    stores:
      vault-main:
        auth: {method: token, token_file: "${CREDENTIALS_DIRECTORY}/vault-token"}

The files are read when the configuration is loaded (at start and on every SIGHUP reload).
systemd copies credentials into the service only when it starts it, so a changed credential
source needs ``systemctl restart``; ``reload`` re-reads the same copies. Outside systemd the
variable is unset and the configuration error names it; ``${CREDENTIALS_DIRECTORY:-/run/secrets}``
gives a fallback.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends sd_notify datagrams to one socket address (None = not under systemd: no-op).

    Sending never raises: a lost notification is logged at debug level and reported as False.
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._socket: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SystemdNotifier:
        """From ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` (honouring ``$WATCHDOG_PID``)."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the timeout), or None without a watchdog."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1e6 / 2

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True if it was sent."""
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            log.debug("systemd_notify_failed", error=exc.strerror or type(exc).__name__)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status)

    def reloading(self, status: str = "reloading configuration") -> bool:
        """``Type=notify-reload`` wants the monotonic time with ``RELOADING=1``."""
        return self.notify(
            RELOADING=1,
            STATUS=status,
            MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
        )

    def stopping(self, status: str) -> bool:
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1) if self._watchdog_usec is not None else False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(address: str) -> str | bytes | None:
    """A ``NOTIFY_SOCKET`` value as a ``sendto`` address; None for kinds not supported here."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    if address.startswith("/"):
        return address
    log.warning("systemd_notify_socket_unsupported", address=address)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # the watchdog is meant for another process (e.g. our parent)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None
