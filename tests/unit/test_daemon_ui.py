"""The status page (``/ui/``) against a fake source, through httpx's ASGI transport: what it
shows (every target, the right badge, what needs a human first, filters, a target's timeline),
what it never shows (a key, a token, markup from a name or an error), its headers, and who may
read it (login, session cookie, CSRF, rate limit, logout, the loopback rules)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from rotator.daemon.control import Health
from rotator.daemon.http import build_app
from rotator.daemon.metrics import Metrics
from rotator.daemon.ui import pages, view
from rotator.daemon.ui.access import (
    CSRF_COOKIE,
    LOGIN_ATTEMPTS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    LoginLimiter,
    Sessions,
    is_loopback_host,
)
from rotator.daemon.ui.app import SECURITY_HEADERS, StatusPage, served
from rotator.daemon.ui.assets import CSS
from rotator.daemon.ui.source import describe_store
from rotator.secret import Secret
from tests.support.ui_world import NOW, FakeSource, fleet, name_of, target_row

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ui-admin-token-for-tests-7Qf2xK"
PLAINTEXT = "Zq3vN8xR2mK7pL4wT9yB6cH1jF5dS0gA"
"""Shaped like a Mistral key: must never reach a page."""
BASE = "http://127.0.0.1:9402"
STATE_OF = {0: "stuck", 1: "failing", 2: "overdue", 3: "rotating", 4: "draining", 5: "draining"}


class Ticks:
    """Wall and monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Control:
    health = Health()


class Rejections(list[str]):
    def __call__(self, reason: str) -> None:
        self.append(reason)


def client_for(
    page: StatusPage,
    *,
    token: str | None,
    loopback: bool = True,
    client: str = "127.0.0.1",
    base: str = BASE,
    rejected: Rejections | None = None,
) -> httpx.AsyncClient:
    secret = Secret(token) if token else None
    ui = page.app(
        admin_token=secret,
        loopback=loopback,
        on_rejected=Rejections() if rejected is None else rejected,
    )
    app = build_app(Control(), admin_token=secret, registry=Metrics().registry, ui=ui)
    transport = httpx.ASGITransport(app=app, client=(client, 50000))
    return httpx.AsyncClient(transport=transport, base_url=base)


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def source() -> FakeSource:
    return FakeSource(fleet(12))


@pytest.fixture
def page(source: FakeSource, ticks: Ticks) -> StatusPage:
    return StatusPage(source, clock=ticks, monotonic=ticks, key=b"k" * 32)


@pytest.fixture
async def open_client(page: StatusPage) -> AsyncIterator[httpx.AsyncClient]:
    """The page without a token, on a loopback listener (no login)."""
    async with client_for(page, token=None) as client:
        yield client


async def login(
    client: httpx.AsyncClient, token: str = TOKEN, next_path: str = ""
) -> httpx.Response:
    form = await client.get("/ui/login")
    csrf = re.search(r'name=csrf value="([^"]+)"', form.text)
    assert csrf is not None
    return await client.post(
        "/ui/login", data={"csrf": csrf.group(1), "token": token, "next": next_path}
    )


# -- what the overview shows ---------------------------------------------------------------


async def test_every_target_is_listed_with_its_badge_and_what_needs_a_human_first(
    open_client: httpx.AsyncClient, source: FakeSource
) -> None:
    answer = await open_client.get("/ui/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    rows = re.findall(
        r'<tr(?: class=a)?><th scope=row><a href="targets/([^"]+)">.*?'
        r'<span class="b (\w+)">(\w+)</span>',
        answer.text,
    )
    assert sorted(name for name, _, _ in rows) == sorted(name_of(i) for i in range(12))
    for name, css, label in rows:
        i = int(name.rsplit("-", 1)[1])
        assert css == label == STATE_OF.get(i % 10, "idle"), name
    order = [view.STATES.index(label) for _, _, label in rows]
    assert order == sorted(order), "what needs a human comes first"
    assert "<h1 class=bad>5 need attention: 2 stuck, 1 overdue, 2 failing</h1>" in answer.text
    assert source.reads == ["snapshot"], "one read of the state per page"


async def test_filters_by_name_and_state_through_the_query_string(
    open_client: httpx.AsyncClient,
) -> None:
    def names(html: str) -> list[str]:
        return re.findall(r'<a href="targets/([^"]+)">', html)

    assert names((await open_client.get("/ui/?q=svc-001")).text) == ["svc-0010", "svc-0011"]
    stuck = (await open_client.get("/ui/?state=stuck")).text
    assert sorted(names(stuck)) == ["svc-0000", "svc-0010"]
    assert "Showing 2 of 12 targets." in stuck
    attention = names((await open_client.get("/ui/?state=attention")).text)
    assert len(attention) == 5
    everything = names((await open_client.get("/ui/?state=bogus&q=")).text)
    assert len(everything) == 12
    assert names((await open_client.get("/ui/?q=nothing-matches")).text) == []


async def test_the_daemon_panel(open_client: httpx.AsyncClient) -> None:
    text = (await open_client.get("/ui/")).text
    panel = text[text.index("<h2 id=dh>Daemon</h2>") :]
    for fact in (
        "rotator 0.1.0",
        "leader (this instance rotates)",
        "/etc/rotator/rotator.yaml, loaded 2026-03-10 07:00:00Z (5h ago)",
        "SQLite /var/lib/rotator/state.db",
        "2d",
        "applied",
        "ready",
    ):
        assert fact in panel, fact


def test_the_state_store_is_described_without_credentials() -> None:
    assert (
        describe_store("sqlite:////var/lib/rotator/state.db") == "SQLite /var/lib/rotator/state.db"
    )
    assert describe_store("sqlite:///state.db") == "SQLite state.db"
    assert (
        describe_store("postgresql+psycopg://rotator:s3cret@db.example:5432/rot?sslmode=require")
        == "PostgreSQL db.example:5432/rot"
    )


async def test_markup_in_a_name_or_an_error_renders_inert_and_keys_are_masked(
    page: StatusPage, source: FakeSource
) -> None:
    """Names come from configuration (which forbids markup) and errors from the store (scrubbed
    there): the page escapes both anyway, and masks anything shaped like a key."""
    evil = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
    status, _stored = target_row(0)
    row = view.rows(replace(source.snap, rows=[replace(status, reason=f"{evil} {PLAINTEXT}")]))[0]
    html = pages.overview_row(replace(row, name=evil), NOW)
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&gt;&lt;img" in html
    assert PLAINTEXT not in html
    source.snap = replace(source.snap, rows=[replace(status, reason=evil + PLAINTEXT)])
    async with client_for(page, token=None) as client:
        text = (await client.get("/ui/")).text
        assert "<script>" not in text
        assert "<img" not in text
        assert PLAINTEXT not in text


async def test_a_hundred_targets_weigh_at_most_50_kb_of_html_and_css(page: StatusPage) -> None:
    page.source = FakeSource(fleet(100))
    async with client_for(page, token=None) as client:
        html = (await client.get("/ui/")).content
        css = (await client.get("/ui/ui.css")).content
    assert len(html) + len(css) <= 50 * 1024, (len(html), len(css))
    assert css == CSS.encode()


async def test_no_external_asset_and_no_inline_script_or_style(
    open_client: httpx.AsyncClient,
) -> None:
    for path in ("/ui/", "/ui/targets/svc-0000", "/ui/?state=stuck"):
        text = (await open_client.get(path)).text
        assert "http://" not in text
        assert "https://" not in text
        assert "//" not in text.replace("<!doctype", "").replace("</", "")
        assert "style=" not in text
        assert "<style" not in text
        scripts = re.findall(r"<script[^>]*>", text)
        assert scripts in (['<script src="ui.js" defer>'], ['<script src="../ui.js" defer>'])
        assert " on" not in re.sub(r">[^<]*<", "><", text), "no event handler attribute"


async def test_every_answer_carries_the_security_headers(open_client: httpx.AsyncClient) -> None:
    for path in (
        "/ui/",
        "/ui/targets/svc-0000",
        "/ui/ui.css",
        "/ui/ui.js",
        "/ui/nope",
        "/ui/targets/nope",
        "/ui/login",
    ):
        answer = await open_client.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (path, name)
    assert "default-src 'self'" in SECURITY_HEADERS["content-security-policy"]


# -- a target's page -----------------------------------------------------------------------


async def test_a_target_page_shows_the_timeline_revoked_keys_audit_and_what_to_do(
    open_client: httpx.AsyncClient, source: FakeSource
) -> None:
    answer = await open_client.get("/ui/targets/svc-0000")
    assert answer.status_code == 200
    text = answer.text
    assert '<h1>svc-0000 <span class="b stuck">stuck</span></h1>' in text
    assert "<code>staged vault:secret/mistral/svc-0000#api_key</code>" in text
    assert text.count("<span class='bar w") == 16, "one bar per journaled step"
    assert "<code>done</code>" in text
    assert "promoted</b> · 2.4 s" in text
    assert "<h2>Revoked keys</h2>" in text
    assert "key.revoked" in text
    runbook = re.search(r"Runbook: <code>([^<]+)</code>", text)
    assert runbook is not None
    assert (ROOT / runbook.group(1)).is_file()
    assert "rotator --config /etc/rotator/rotator.yaml recover" in text
    assert source.reads == ["history svc-0000"]
    idle = (await open_client.get("/ui/targets/svc-0006")).text
    assert "What to do" not in idle
    failing = (await open_client.get("/ui/targets/svc-0001")).text
    assert "docs/runbooks/rotation-failed.md" in failing
    assert "rotator --config /etc/rotator/rotator.yaml rotate svc-0001" in failing


async def test_a_wrong_method_is_405_with_allow(open_client: httpx.AsyncClient) -> None:
    answer = await open_client.post("/ui/targets/svc-0000")
    assert answer.status_code == 405
    assert sorted(answer.headers["allow"].split(", ")) == ["GET", "HEAD"]
    assert answer.headers["x-frame-options"] == "DENY"


async def test_an_unknown_target_is_404_and_a_broken_store_503_without_details(
    open_client: httpx.AsyncClient, source: FakeSource
) -> None:
    assert (await open_client.get("/ui/targets/nope")).status_code == 404
    source.broken = RuntimeError(f"database is locked; password=hunter2 {PLAINTEXT}")
    with capture_logs() as logs:
        for path in ("/ui/", "/ui/targets/svc-0000"):
            answer = await open_client.get(path)
            assert answer.status_code == 503
            assert "hunter2" not in answer.text
            assert "locked" not in answer.text
    assert [e["event"] for e in logs] == ["ui_failed", "ui_failed"]
    assert "hunter2" not in str(logs)


# -- who may read it -----------------------------------------------------------------------


async def test_without_a_session_nothing_is_readable_only_the_login_form(page: StatusPage) -> None:
    async with client_for(page, token=TOKEN) as client:
        for path, where in (
            ("/ui/", "login"),
            ("/ui/targets/svc-0000", "../login?next=targets%2Fsvc-0000"),
            ("/ui/targets/svc-0000/deeper", "../../login"),
            ("/ui/nope", "login"),
        ):
            answer = await client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == where, path
            assert "svc-" not in answer.text
        form = await client.get("/ui/login")
        assert form.status_code == 200
        assert "svc-" not in form.text
        assert "type=password" in form.text
        assert (await client.get("/ui/ui.css")).status_code == 200


async def test_login_with_the_token_gives_a_strict_short_session_cookie(page: StatusPage) -> None:
    async with client_for(page, token=TOKEN) as client:
        answer = await login(client, next_path="targets/svc-0001")
        assert answer.status_code == 303
        assert answer.headers["location"] == "./targets/svc-0001"
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
        )
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "max-age", "path"} <= attributes
        assert "samesite=strict" in cookie.lower()
        assert f"max-age={SESSION_SECONDS}" in cookie.lower()
        assert "secure" not in attributes, "plain http: the browser would drop a Secure cookie"
        assert TOKEN not in cookie
        page_after = await client.get("/ui/targets/svc-0001")
        assert page_after.status_code == 200
        assert "Log out" in page_after.text
        assert TOKEN not in page_after.text


async def test_the_cookies_are_secure_behind_tls(page: StatusPage) -> None:
    """Served as https, or behind a proxy that says ``X-Forwarded-Proto: https``."""
    async with client_for(page, token=TOKEN, base="https://127.0.0.1:9402") as client:
        answer = await login(client)
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
        )
        assert "; secure" in cookie.lower()
    async with client_for(page, token=TOKEN) as client:
        form = await client.get("/ui/login", headers={"X-Forwarded-Proto": "https"})
        assert "; secure" in form.headers["set-cookie"].lower()


async def test_a_wrong_token_is_401_logged_without_it_and_counted(page: StatusPage) -> None:
    rejected = Rejections()
    async with client_for(page, token=TOKEN, rejected=rejected) as client:
        with capture_logs() as logs:
            answer = await login(client, token="not-the-token-" + PLAINTEXT)
        assert answer.status_code == 401
        assert "Wrong token." in answer.text
        assert not any(c.startswith(SESSION_COOKIE) for c in answer.headers.get_list("set-cookie"))
        assert (await client.get("/ui/")).status_code == 303
    assert rejected == ["unauthorized"]
    assert [e["event"] for e in logs] == ["ui_login_failed"]
    assert PLAINTEXT not in str(logs)
    assert "not-the-token" not in str(logs)
    assert PLAINTEXT not in answer.text


async def test_a_login_without_the_forms_token_or_from_another_site_is_403(
    page: StatusPage,
) -> None:
    async with client_for(page, token=TOKEN) as client:
        bare = await client.post("/ui/login", data={"token": TOKEN})
        assert bare.status_code == 403
        await client.get("/ui/login")  # the cookie half, but a forged field
        forged = await client.post("/ui/login", data={"token": TOKEN, "csrf": "1.2.3"})
        assert forged.status_code == 403
        client.headers["Sec-Fetch-Site"] = "cross-site"
        cross = await login(client)
        assert cross.status_code == 403
        for answer in (bare, forged, cross):
            assert not any(
                c.startswith(SESSION_COOKIE) for c in answer.headers.get_list("set-cookie")
            )


async def test_an_expired_or_forged_cookie_is_refused(page: StatusPage, ticks: Ticks) -> None:
    async with client_for(page, token=TOKEN) as client:
        await login(client)
        assert (await client.get("/ui/")).status_code == 200
        ticks.now += SESSION_SECONDS + 1
        expired = await client.get("/ui/")
        assert expired.status_code == 303
        again = await client.get("/ui/login")
        assert "Your session has ended" in again.text
    async with client_for(page, token=TOKEN) as client:
        await login(client)
        value = client.cookies[SESSION_COOKIE]
        client.cookies.set(SESSION_COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
        assert (await client.get("/ui/")).status_code == 303
        expires = int(value.split(".")[1])
        longer = value.replace(f".{expires}.", f".{expires + 3600}.")
        client.cookies.set(SESSION_COOKIE, longer)
        assert (await client.get("/ui/")).status_code == 303


async def test_a_session_ends_when_the_token_changes_or_the_process_restarts(
    source: FakeSource, ticks: Ticks
) -> None:
    page = StatusPage(source, clock=ticks, monotonic=ticks, key=b"k" * 32)
    async with client_for(page, token=TOKEN) as client:
        await login(client)
        cookie = client.cookies[SESSION_COOKIE]
    async with client_for(page, token=TOKEN) as client:  # a reload, same token
        client.cookies.set(SESSION_COOKIE, cookie)
        assert (await client.get("/ui/")).status_code == 200
    async with client_for(page, token=TOKEN + "-new") as client:  # a reload, new token
        client.cookies.set(SESSION_COOKIE, cookie)
        assert (await client.get("/ui/")).status_code == 303
    restarted = StatusPage(source, clock=ticks, monotonic=ticks, key=b"r" * 32)
    async with client_for(restarted, token=TOKEN) as client:
        client.cookies.set(SESSION_COOKIE, cookie)
        assert (await client.get("/ui/")).status_code == 303


async def test_logout_needs_its_form_token_and_forgets_the_session(page: StatusPage) -> None:
    async with client_for(page, token=TOKEN) as client:
        await login(client)
        cookie = client.cookies[SESSION_COOKIE]
        text = (await client.get("/ui/")).text
        csrf = re.search(r'action="logout"><input type=hidden name=csrf value="([^"]+)"', text)
        assert csrf is not None
        refused = await client.post("/ui/logout", data={"csrf": "wrong"})
        assert refused.status_code == 403
        assert (await client.get("/ui/")).status_code == 200
        out = await client.post("/ui/logout", data={"csrf": csrf.group(1)})
        assert out.status_code == 303
        assert out.headers["location"] == "login"
        assert (await client.get("/ui/")).status_code == 303
        client.cookies.set(SESSION_COOKIE, cookie)  # replayed after the logout
        assert (await client.get("/ui/")).status_code == 303


async def test_login_attempts_are_rate_limited_per_client_address(
    page: StatusPage, ticks: Ticks
) -> None:
    async with client_for(page, token=TOKEN, client="192.0.2.7") as client:
        for _ in range(LOGIN_ATTEMPTS):
            assert (await login(client, token="wrong")).status_code == 401
        limited = await login(client)  # even the right token: the address waits
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "Too many sign-in attempts" in limited.text
    async with client_for(page, token=TOKEN, client="192.0.2.8") as other:
        assert (await login(other)).status_code == 303
    ticks.now += 61
    async with client_for(page, token=TOKEN, client="192.0.2.7") as client:
        assert (await login(client)).status_code == 303


def test_the_limiter_forgets_the_oldest_addresses() -> None:
    clock = Ticks()
    limiter = LoginLimiter(attempts=1, window=60, monotonic=clock)
    assert limiter.admit("a") == 0
    assert limiter.admit("a") == pytest.approx(60)
    clock.now += 30
    assert limiter.admit("a") == pytest.approx(30)


async def test_a_next_address_elsewhere_is_ignored(page: StatusPage) -> None:
    for evil in ("//evil.example/", "https://evil.example", "../api/v1/targets", "targets/x/y"):
        async with client_for(page, token=TOKEN) as client:
            answer = await login(client, next_path=evil)
            assert answer.headers["location"] == "./", evil


async def test_without_a_token_the_page_answers_loopback_clients_only(page: StatusPage) -> None:
    assert page.app(admin_token=None, loopback=False) is None
    async with client_for(page, token=None, loopback=False) as client:
        assert (await client.get("/ui/")).status_code == 404
    rejected = Rejections()
    async with client_for(page, token=None, client="198.51.100.4", rejected=rejected) as client:
        assert (await client.get("/ui/")).status_code == 403
    async with client_for(page, token=None, base="http://rebound.example:9402") as client:
        answer = await client.get("/ui/")
        assert answer.status_code == 403
        assert "svc-" not in answer.text
    for base in ("http://127.0.0.1:9402", "http://localhost:9402", "http://[::1]:9402"):
        async with client_for(page, token=None, base=base) as client:
            assert (await client.get("/ui/")).status_code == 200, base
            assert (await client.get("/ui/login")).headers["location"] == "./"
    assert rejected == ["other"]


def test_served_says_why_not() -> None:
    token = Secret(TOKEN)
    assert served(enabled=True, admin_token=None, listen_host="127.0.0.1") is None
    assert served(enabled=True, admin_token=token, listen_host="0.0.0.0") is None
    assert served(enabled=False, admin_token=token, listen_host="127.0.0.1") == "server.ui is false"
    why = served(enabled=True, admin_token=None, listen_host="0.0.0.0")
    assert why is not None
    assert "loopback" in why


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10:9402", True),
        ("localhost", True),
        ("LOCALHOST:80", True),
        ("[::1]:9402", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("", False),
        ("10.0.0.1", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("[::]", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_session_tokens_expire_and_are_bound_to_the_key() -> None:
    clock = Ticks()
    sessions = Sessions(Secret(TOKEN), clock=clock, key=b"a" * 32)
    cookie, session = sessions.issue()
    assert sessions.check(cookie) == session
    assert session.expires - clock.now == SESSION_SECONDS
    assert Sessions(Secret(TOKEN), clock=clock, key=b"b" * 32).check(cookie) is None
    for junk in ("", "v1", "v1.x.y.z", "v2." + cookie[3:], cookie + "x", "a" * 500):
        assert sessions.check(junk) is None
    token = sessions.login_token()
    assert sessions.login_token_ok(token, token)
    assert not sessions.login_token_ok(token, sessions.login_token())
    clock.now += timedelta(minutes=11).total_seconds()
    assert not sessions.login_token_ok(token, token)
    assert sessions.check(cookie) == session
    clock.now += timedelta(minutes=4).total_seconds()
    assert sessions.check(cookie) is None
    assert CSRF_COOKIE != SESSION_COOKIE


def test_page_states_extend_the_status_with_overdue() -> None:
    """Past max_age (or first seen longer ago, never rotated) or 15 min late: overdue, unless
    stuck or rotating (a rotation in flight is what fixes it); a failing count reads right."""
    status, stored = target_row(7)  # idle, rotated 3 days ago
    max_age = timedelta(days=30)
    assert view.page_state(status, stored, max_age, NOW) == ("idle", "")
    old = replace(status, last_rotated_at=NOW - timedelta(days=31))
    assert view.page_state(old, stored, max_age, NOW)[0] == "overdue"
    late = replace(status, next_due_at=NOW - timedelta(minutes=16))
    assert view.page_state(late, stored, max_age, NOW) == ("overdue", "next rotation 16m late")
    on_time = replace(status, next_due_at=NOW - timedelta(minutes=14))
    assert view.page_state(on_time, stored, max_age, NOW)[0] == "idle"
    never = replace(status, last_rotated_at=None)
    seen = replace(stored, first_seen_at=NOW - timedelta(days=40))
    assert view.page_state(never, seen, max_age, NOW) == (
        "overdue",
        "never rotated; first seen 40d ago, max_age 30d",
    )
    for state in ("stuck", "rotating"):
        assert view.page_state(replace(old, state=state), stored, max_age, NOW)[0] == state
    failing = replace(old, state="failing", reason="1 failed attempts")
    once = replace(stored, consecutive_failures=1)
    assert view.page_state(failing, once, max_age, NOW) == (
        "overdue",
        "key 31d old, max_age 30d; 1 failed attempt since the last success",
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (61, "1m"),
        (3600, "1h"),
        (3660, "1h1m"),
        (86400 * 30, "30d"),
        (86400 * 3 + 3600 * 10 + 60, "3d10h"),
        (-5, "0s"),
    ],
)
def test_spans(seconds: int, text: str) -> None:
    assert view.span(timedelta(seconds=seconds)) == text
