"""Webhook notifications posted to a real HTTP receiver on loopback.

The receiver records each request and answers from a script (status and headers per request,
then 200); it can hold answers back until the test lets them go. Retries wait on a fake clock,
so backoff costs no real time.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator.clock import FakeClock
from rotator.config import Webhook
from rotator.daemon.notify import ALERT_EVENTS, Notifier, event_for
from rotator.engine.context import Alert
from rotator.errors import ConfigError
from rotator.retry import RetryPolicy
from rotator.secret import Secret

KEY = "Zq8Xk2VbN4mR7tYpL1sD3fG5hJ6wE9aC"  # shaped like a Mistral key: 32 letters and digits
ROTATION = "6f1c3a52-9b1e-4c55-8d0a-3f2b7c9e1d24"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers from ``script``."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.release.set()

    def hook(self, path: str = "/hook", **settings: Any) -> Webhook:
        return Webhook(url=Secret(self.url + path), **settings)

    def bodies(self, path: str | None = None) -> list[Any]:
        with self.lock:
            return [r.body for r in self.requests if path is None or r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The recording receiver, served from a thread for the test."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            with state.lock:
                state.requests.append(
                    Received(self.path, dict(self.headers.items()), json.loads(raw))
                )
                status, headers = state.script.pop(0) if state.script else (200, {})
            state.release.wait(timeout=30)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


FAST = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0, max_elapsed=600.0)


def notifier(*hooks: Webhook, **kwargs: Any) -> Notifier:
    return Notifier(hooks, clock=kwargs.pop("clock", FakeClock()), retry=FAST, **kwargs)


async def test_an_engine_alert_is_posted_as_generic_json(receiver: Receiver) -> None:
    """A rotation_failed alert reaches a JSON webhook as {event, target, rotation_id, message,
    at, alert}."""
    sender = notifier(receiver.hook())
    await sender(Alert("rotation_failed", "prod-backend", ROTATION, "verify: unauthorized"))
    assert await sender.drain(30)
    await sender.aclose()
    (body,) = receiver.bodies()
    assert body == {
        "event": "rotation_failed",
        "target": "prod-backend",
        "rotation_id": ROTATION,
        "message": "verify: unauthorized",
        "at": "2026-01-01T00:00:00Z",
        "alert": "rotation_failed",
    }
    assert receiver.requests[0].headers["Content-Type"] == "application/json"
    assert sender.stats == {"delivered": 1}


async def test_slack_format_is_one_escaped_text(receiver: Receiver) -> None:
    """A Slack webhook gets {"text": …} naming the event, target and rotation, with <, > and &
    escaped."""
    sender = notifier(receiver.hook(format="slack"))
    await sender(Alert("rotation_stuck", "prod", ROTATION, "promote <vault> & aws failed"))
    assert await sender.drain(30)
    await sender.aclose()
    (body,) = receiver.bodies()
    assert body == {
        "text": f"[rotator] rotation_stuck: prod (rotation {ROTATION}):"
        " promote &lt;vault&gt; &amp; aws failed"
    }


async def test_each_webhook_gets_only_the_events_it_subscribes_to(receiver: Receiver) -> None:
    """Defaults omit successes; a webhook listing rotation_succeeded gets only those."""
    sender = notifier(
        receiver.hook("/ops"), receiver.hook("/audit", events=("rotation_succeeded",))
    )
    assert sender.notify("rotation_succeeded", "prod", rotation_id=ROTATION, message="ok") == 1
    await sender(Alert("old_key_in_use_at_max_grace", "prod", ROTATION, "key k1 still used"))
    assert sender.notify("rotation_overdue", "prod", message="older than max_age") == 1
    assert await sender.drain(30)
    await sender.aclose()
    assert [b["event"] for b in receiver.bodies("/audit")] == ["rotation_succeeded"]
    assert sorted(b["event"] for b in receiver.bodies("/ops")) == [
        "old_key_in_use",
        "rotation_overdue",
    ]
    in_use = next(b for b in receiver.bodies("/ops") if b["event"] == "old_key_in_use")
    assert in_use["alert"] == "old_key_in_use_at_max_grace"


@pytest.mark.parametrize(
    ("alert", "event"),
    [
        ("rotation_failed", "rotation_failed"),
        ("rollback_incomplete", "rotation_failed"),
        ("rotation_stuck", "rotation_stuck"),
        ("old_key_in_use_at_max_grace", "old_key_in_use"),
        ("revocation_refused", "old_key_in_use"),
        ("revocation_deferred", "old_key_in_use"),
        ("adoption_refused", "old_key_in_use"),
        ("something_new", "rotation_stuck"),
    ],
)
def test_engine_alerts_map_onto_configured_events(alert: str, event: str) -> None:
    """Every alert the engine raises has a documented notification event; unknown ones need an
    operator."""
    assert event_for(alert) == event


def test_every_alert_the_engine_raises_is_mapped() -> None:
    """The mapping names every alert event the engine's source raises."""
    import pathlib
    import re

    import rotator.engine

    raised: set[str] = set()
    for path in pathlib.Path(rotator.engine.__file__).parent.glob("*.py"):
        text = path.read_text()
        raised |= set(re.findall(r'Alert\(\s*"([a-z_]+)"', text))
        raised |= set(re.findall(r'_alert\(\s*(?:ctx,\s*)?"([a-z_]+)"', text))
    assert raised, "no alert found in the engine's source"
    assert raised <= set(ALERT_EVENTS)


async def test_server_errors_are_retried_until_delivered(receiver: Receiver) -> None:
    """503, 502, then 200: three posts, one delivery, backoff waited on the clock."""
    receiver.script = [(503, {}), (502, {})]
    clock = FakeClock()
    sender = notifier(receiver.hook(), clock=clock)
    await sender(Alert("rotation_failed", "prod", None, "boom"))
    assert await sender.drain(30)
    await sender.aclose()
    assert len(receiver.bodies()) == 3
    assert sender.stats == {"delivered": 1}


async def test_429_waits_for_retry_after(receiver: Receiver) -> None:
    """A 429 is retried no sooner than its Retry-After."""
    receiver.script = [(429, {"Retry-After": "120"})]
    clock = FakeClock()
    sender = notifier(receiver.hook(), clock=clock)
    await sender(Alert("rotation_failed", "prod", None, "boom"))
    assert await sender.drain(30)
    await sender.aclose()
    assert len(receiver.bodies()) == 2
    assert clock.monotonic() >= 120
    assert sender.stats == {"delivered": 1}


@pytest.mark.parametrize("status", [400, 401, 404, 410])
async def test_client_errors_are_not_retried_and_are_logged_without_the_url(
    receiver: Receiver, status: int
) -> None:
    """A 4xx other than 429 gives up at once; the log line names the webhook by position."""
    receiver.script = [(status, {})]
    hook = receiver.hook("/services/T000/B000/XXXXsecretXXXX")
    sender = notifier(receiver.hook("/other", events=("rotation_succeeded",)), hook)
    with capture_logs() as logs:
        await sender(Alert("rotation_failed", "prod", None, "boom"))
        assert await sender.drain(30)
    await sender.aclose()
    assert len(receiver.bodies()) == 1
    assert sender.stats == {"failed": 1}
    (failed,) = [e for e in logs if e["event"] == "notification_failed"]
    assert failed["webhook"] == 1
    assert failed["status"] == status
    assert failed["retried"] is False
    assert "XXXXsecretXXXX" not in repr(logs)
    assert receiver.url not in repr(logs)


async def test_retries_are_bounded(receiver: Receiver) -> None:
    """A webhook that always fails gets max_attempts posts, then one counted failure."""
    receiver.script = [(500, {})] * 10
    sender = notifier(receiver.hook())
    await sender(Alert("rotation_failed", "prod", None, "boom"))
    assert await sender.drain(30)
    await sender.aclose()
    assert len(receiver.bodies()) == FAST.max_attempts
    assert sender.stats == {"failed": 1}


async def test_an_unreachable_webhook_fails_quietly_without_the_url() -> None:
    """Refused connections are retried, then counted; neither the URL nor its token is
    logged."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/tok-3f9a7c"
    sender = notifier(Webhook(url=Secret(url)))
    with capture_logs() as logs:
        await sender(Alert("rotation_stuck", "prod", None, "stuck"))
        assert await sender.drain(30)
    await sender.aclose()
    assert sender.stats == {"failed": 1}
    (failed,) = [e for e in logs if e["event"] == "notification_failed"]
    assert failed["error"] == "ConnectError"
    assert failed["attempts"] == FAST.max_attempts
    assert "tok-3f9a7c" not in repr(logs)


async def test_notifying_never_waits_for_the_webhook(receiver: Receiver) -> None:
    """The alert hook returns while the receiver still holds its answer; delivery completes
    later in the background."""
    receiver.release.clear()
    sender = notifier(receiver.hook())
    await sender(Alert("rotation_failed", "prod", None, "boom"))
    assert sender.pending == 1
    assert sender.stats == {}
    receiver.release.set()
    assert await sender.drain(30)
    await sender.aclose()
    assert sender.stats == {"delivered": 1}


async def test_deliveries_in_flight_are_bounded(receiver: Receiver) -> None:
    """Beyond max_pending deliveries in flight, a notification is dropped and counted."""
    receiver.release.clear()
    sender = notifier(receiver.hook(), max_pending=2)
    for _ in range(3):
        await sender(Alert("rotation_failed", "prod", None, "boom"))
    assert sender.pending == 2
    assert sender.stats == {"dropped": 1}
    receiver.release.set()
    assert await sender.drain(30)
    await sender.aclose()
    assert sender.stats == {"dropped": 1, "delivered": 2}


async def test_close_abandons_what_does_not_finish_in_time(receiver: Receiver) -> None:
    """aclose waits only its timeout, then cancels and counts what is still in flight."""
    receiver.release.clear()
    sender = notifier(receiver.hook())
    await sender(Alert("rotation_failed", "prod", None, "boom"))
    await sender.aclose(timeout=0.05)
    assert sender.pending == 0
    assert sender.stats == {"failed": 1}
    receiver.release.set()


async def test_no_key_leaves_in_a_notification(receiver: Receiver) -> None:
    """Key-shaped text and any plaintext wrapped in a Secret are masked in every format."""
    wrapped = Secret("sk-live-" + "q" * 20)
    sender = notifier(receiver.hook("/json"), receiver.hook("/slack", format="slack"))
    message = f"create answered {KEY} and {wrapped.reveal()}"
    await sender(Alert("rotation_failed", "prod", None, message))
    assert await sender.drain(30)
    await sender.aclose()
    sent = json.dumps(receiver.bodies())
    assert len(receiver.bodies()) == 2
    assert KEY not in sent
    assert wrapped.reveal() not in sent
    assert "***" in receiver.bodies("/json")[0]["message"]


def test_a_webhook_url_must_be_http() -> None:
    """A non-HTTP URL is a configuration error naming the field, without the URL."""
    with pytest.raises(ConfigError) as caught:
        Notifier(
            [Webhook(url=Secret("https://ok.example/x")), Webhook(url=Secret("ftp://tok@x/y"))],
            source="rotator.yaml",
        )
    assert str(caught.value) == (
        "rotator.yaml: notifications.webhooks[1].url: must be an http(s) URL"
    )


async def test_no_webhooks_sends_nothing() -> None:
    """Without webhooks the notifier accepts every event and starts no delivery."""
    sender = Notifier([])
    await sender(Alert("rotation_stuck", "prod", None, "stuck"))
    assert sender.notify("rotation_overdue", "prod") == 0
    assert sender.pending == 0
    await sender.aclose()
