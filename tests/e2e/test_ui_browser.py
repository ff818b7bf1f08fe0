"""The status page in a real browser: Debian's chromium, headless, driven by Playwright, against
``rotator run`` with the stand-ins (the Mistral stand-in, OpenBao, moto).

Seven targets are brought into every state through the stand-in's controls and the daemon's
API: ``support-bot`` rotated (draining, its old key in grace), ``analytics`` rotated in an
emergency (idle, its old key revoked), ``internal-tools`` untouched (idle, never rotated),
``search-indexer`` failing (its workspace's spending limit reached: the new key fails
verification and the rotation rolls back), ``reports-batch`` overdue (rotated, then its
``max_age`` of 8 s passes while its workspace's limit makes every attempt fail),
``payments-api`` stuck (``GET /v1/models`` refuses the new key only after the promotion: the
first check is slowed by a latency fault, then every call fails) and ``chat-frontend``
rotating (the stand-in keeps its new key inactive until the test moves the stand-in's clock).

The browser logs in (after a wrong token), reads the overview (every target, the right badge,
no plaintext anywhere), moves through it with the keyboard, runs axe-core on each page (no
serious or critical violation), opens a target's page after its rotation, is refused with a
tampered cookie, and logs out. Screenshots at 1280x800 and 390x844 go to
``var/test-artifacts/ui/`` (``ROTATOR_UI_DOCS_SCREENSHOT=1`` also writes the README's,
``docs/images/status-page.png``). The page's weight here is printed; ``bench/ui.py`` measures
weight and server time for 100 and 1000 targets.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from rotator_dev.standin import StandinHandle
from tests.e2e.test_daemon_run import TOKEN, Daemon, wait_until
from tests.support.stack import FIELD, Backend, Stack, TargetSpec

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "ui"
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "status-page.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
EXPECTED = {
    "payments-api": "stuck",
    "reports-batch": "overdue",
    "search-indexer": "failing",
    "chat-frontend": "rotating",
    "support-bot": "draining",
    "analytics": "idle",
    "internal-tools": "idle",
}
SERIOUS = {"serious", "critical"}
FOCUSED = (
    "(() => { const e = document.activeElement;"
    " return e.getAttribute('name') || e.textContent.trim(); })()"
)


@pytest.fixture(scope="module")
def axe_script() -> str:
    """axe-core's source, fetched (pinned, integrity-checked) by scripts/ensure-axe."""
    found = subprocess.run(
        [str(ROOT / "scripts" / "ensure-axe")], check=True, capture_output=True, text=True
    )
    return Path(found.stdout.strip()).read_text(encoding="utf-8")


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def named(stack: Stack, name: str, backends: tuple[Backend, ...], workspace: str) -> TargetSpec:
    """A target of the stack under a readable name, in ``workspace``."""
    spec = stack.add_target(backends)
    spec = dataclasses.replace(spec, name=name, workspace_id=workspace)
    stack.targets[-1] = spec
    return spec


def write_config(stack: Stack, path: Path, state_url: str) -> Path:
    data = stack.config_dict(state_url=state_url, policy={"grace": "1h"})
    data["server"] = {"listen": "127.0.0.1:0", "admin_token": TOKEN}
    overrides: dict[str, dict[str, Any]] = {
        "reports-batch": {"max_age": "8s"},
        "chat-frontend": {"activation_timeout": "5m"},
    }
    for target in data["targets"]:
        target.update(overrides.get(target["name"], {}))
    path.write_text(yaml.safe_dump(data))
    return path


class Api:
    """The daemon's on-demand API, with the admin token."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def rotate(self, target: str, *, emergency: bool = False) -> str:
        answer = self.http.post(
            f"/api/v1/targets/{target}/rotate", params={"emergency": str(emergency).lower()}
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["rotation_id"])

    def view(self, rotation_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/api/v1/rotations/{rotation_id}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def finished(self, rotation_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            view = self.view(rotation_id)
            return view if view["state"] in {"done", "rolled_back", "stuck"} else None

        result: dict[str, Any] = wait_until(done, f"rotation {rotation_id} finished")
        return result

    def states(self) -> dict[str, str]:
        return {row["target"]: row["state"] for row in self.http.get("/api/v1/targets").json()}


def shoot(page: Page, name: str, *, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def axe(page: Page, script: str) -> list[dict[str, Any]]:
    """axe-core's violations on the page (injected through the DevTools protocol: the page's
    CSP, rightly, refuses inline scripts)."""
    page.evaluate(script + "\n;0")
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def check_accessible(page: Page, script: str, what: str, report: list[str]) -> None:
    violations = axe(page, script)
    report.append(
        f"axe {what}: "
        + (", ".join(f"{v['id']} ({v['impact']})" for v in violations) or "no violation")
    )
    serious = [v for v in violations if v["impact"] in SERIOUS]
    assert not serious, [(v["id"], v["help"], [n["html"] for n in v["nodes"]]) for v in serious]


def no_plaintext(text: str, plaintexts: set[str]) -> None:
    found = [p[:4] + "…" for p in plaintexts if p in text]
    assert not found, f"plaintext keys in the page: {found}"


def test_the_status_page_in_a_browser(
    stack: Stack,
    standin: StandinHandle,
    state_url: str,
    tmp_path: Path,
    browser: Browser,
    axe_script: str,
) -> None:
    control = standin.control
    limited = control.add_workspace("limited")
    main = standin.workspace_id
    specs = {
        "payments-api": named(stack, "payments-api", ("vault",), main),
        "reports-batch": named(stack, "reports-batch", ("vault", "aws"), limited),
        "search-indexer": named(stack, "search-indexer", ("vault", "aws"), limited),
        "chat-frontend": named(stack, "chat-frontend", ("vault", "aws"), main),
        "support-bot": named(stack, "support-bot", ("vault", "aws"), main),
        "analytics": named(stack, "analytics", ("aws",), main),
        "internal-tools": named(stack, "internal-tools", ("vault", "aws"), main),
    }
    for spec in specs.values():
        stack.seed(spec)
    plaintexts = {
        data[FIELD]
        for spec in specs.values()
        for _, data in stack.consumer_reads(spec)
        if data is not None
    }
    config = write_config(stack, tmp_path / "rotator.yaml", state_url)
    daemon = Daemon(stack, config, tmp_path / "daemon.log")
    report: list[str] = []
    api = Api(daemon.url)
    try:
        # Draining, idle after an emergency, and the overdue one's first (good) rotation.
        for name, emergency in (
            ("support-bot", False),
            ("analytics", True),
            ("reports-batch", False),
        ):
            view = api.finished(api.rotate(name, emergency=emergency))
            assert view["outcome"] in {"promoted", "rotated"}, view
        # Failing: the workspace's spending limit makes the new key fail verification.
        control.set_spend_limit(limited, True)
        assert api.finished(api.rotate("search-indexer"))["outcome"] == "rolled_back"
        # Overdue: reports-batch's key passes its max_age of 8 s; the attempt the daemon then
        # makes fails like search-indexer's (same workspace), and it waits an hour to retry.
        wait_until(lambda: _overdue(api), "reports-batch overdue")
        # Stuck: the first check of the new key passes (slowed down); after the promotion,
        # every check fails, so the rotation cannot finish nor go back.
        control.inject("models", "latency", seconds=2.0, count=1)
        stuck = api.rotate("payments-api")
        wait_until(lambda: not control.faults().get("models"), "the slow check under way")
        control.fail("models", 401, count=None)
        assert api.finished(stuck)["state"] == "stuck"
        control.clear_faults()
        # Rotating: the new key stays inactive until the stand-in's clock moves.
        control.set_activation_delay(3600)
        rotating = api.rotate("chat-frontend")
        # The new key exists and waits for its activation (its name ends with the rotation's
        # short id; the journal records it with the next write, before the staging).
        short = rotating.replace("-", "")[:8]
        wait_until(
            lambda: any((k.name or "").endswith(short) for k in control.key_facts()),
            "the new key created, waiting for its activation",
        )
        for name, state in api.states().items():
            report.append(f"status {name}: {state}")

        page = browser.new_page(viewport=DESKTOP)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        responses: list[tuple[str, dict[str, str]]] = []
        page.on("response", lambda r: responses.append((r.url, r.all_headers())))

        # Not signed in: the login form, and a wrong token refused.
        page.goto(f"{daemon.url}/ui/")
        expect(page).to_have_url(re.compile(r"/ui/login$"))
        shoot(page, "login-1280x800")
        check_accessible(page, axe_script, "login", report)
        page.fill("#token", "not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("[role=alert]")).to_have_text("Wrong token.")
        page.fill("#token", TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/ui/$"))

        # The overview: every target, the right badge, what needs a human first.
        expect(page.locator("h1")).to_have_text("3 need attention: 1 stuck, 1 overdue, 1 failing")
        rows = page.locator("#t tbody tr")
        expect(rows).to_have_count(len(EXPECTED))
        shown = [
            (rows.nth(i).locator("th a").inner_text(), rows.nth(i).locator(".b").inner_text())
            for i in range(len(EXPECTED))
        ]
        assert dict(shown) == EXPECTED
        assert [name for name, _ in shown][:3] == [
            "payments-api",
            "reports-batch",
            "search-indexer",
        ]
        html = page.content()
        no_plaintext(html, plaintexts)
        assert TOKEN not in html
        shoot(page, "overview-1280x800")
        if os.environ.get("ROTATOR_UI_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(ARTIFACTS / "overview-1280x800.png", DOCS_SCREENSHOT)
        check_accessible(page, axe_script, "overview", report)
        weight = len(httpx.get(f"{daemon.url}/ui/ui.css").content) + len(html.encode())
        report.append(f"overview weight with {len(EXPECTED)} targets: {weight} bytes (HTML+CSS)")

        # The keyboard: skip link first, the filters, then the targets; Enter opens one.
        page.keyboard.press("Tab")
        expect(page.locator(":focus")).to_have_text("Skip to content")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", "focus is visible"
        order = []
        for _ in range(6):
            page.keyboard.press("Tab")
            order.append(page.evaluate(FOCUSED))
        assert order == ["rotator status", "Log out", "q", "state", "Filter", "payments-api"]
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/ui/targets/payments-api$"))
        expect(page.locator("h1 .b")).to_have_text("stuck")
        expect(page.locator("text=What to do")).to_be_visible()
        shoot(page, "target-stuck-1280x800", full_page=True)
        check_accessible(page, axe_script, "target (stuck)", report)

        # Filters through the query string.
        page.goto(f"{daemon.url}/ui/?state=attention")
        expect(rows).to_have_count(3)
        page.goto(f"{daemon.url}/ui/?q=bot")
        expect(rows).to_have_count(1)

        # A target's page after its rotation: the timeline of its journal.
        page.goto(f"{daemon.url}/ui/targets/support-bot")
        expect(page.locator("h1 .b")).to_have_text("draining")
        steps = page.locator("table.tl").first.locator("tbody tr")
        step_names = [steps.nth(i).locator("code").inner_text() for i in range(steps.count())]
        assert step_names[0] == "planned"
        assert step_names[-1] == "done"
        assert any(s.startswith("promoted vault:") for s in step_names), step_names
        no_plaintext(page.content(), plaintexts)
        shoot(page, "target-1280x800", full_page=True)
        check_accessible(page, axe_script, "target (draining)", report)

        # The phone.
        phone = browser.new_page(viewport=PHONE)
        phone.context.add_cookies(page.context.cookies())
        phone.goto(f"{daemon.url}/ui/")
        expect(phone.locator("#t tbody tr")).to_have_count(len(EXPECTED))
        shoot(phone, "overview-390x844")
        check_accessible(phone, axe_script, "overview (phone)", report)
        phone.goto(f"{daemon.url}/ui/targets/support-bot")
        shoot(phone, "target-390x844")

        # The rotating target finishes once the stand-in's clock moves past its activation.
        control.advance(3601)
        assert api.finished(rotating)["outcome"] == "promoted"

        # Headers and CSP: every page answer carried them; the console saw no CSP violation.
        ui_answers = [
            h for url, h in responses if "/ui/" in url and "text/html" in h.get("content-type", "")
        ]
        assert ui_answers
        no_plaintext(repr(responses), plaintexts)
        assert TOKEN not in repr(responses)
        for headers in ui_answers:
            assert headers["content-security-policy"].startswith("default-src 'self'")
            assert headers["cache-control"] == "no-store"
            assert headers["x-content-type-options"] == "nosniff"
        assert not [m for m in console if "Content Security Policy" in m], console

        # A tampered cookie is refused; then the real one logs out.
        good = page.context.cookies()
        session = next(c for c in good if c["name"] == "rotator_session")
        tampered = browser.new_page(viewport=DESKTOP)
        tampered.context.add_cookies([{**session, "value": session["value"][:-4] + "AAAA"}])
        tampered.goto(f"{daemon.url}/ui/")
        expect(tampered).to_have_url(re.compile(r"/ui/login$"))
        expect(tampered.locator("[role=alert]")).to_contain_text("session has ended")
        page.goto(f"{daemon.url}/ui/")
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/ui/login$"))
        page.goto(f"{daemon.url}/ui/targets/support-bot")
        expect(page).to_have_url(re.compile(r"/ui/login\?next=targets%2Fsupport-bot$"))
        replay = browser.new_page(viewport=DESKTOP)
        replay.context.add_cookies([session])
        replay.goto(f"{daemon.url}/ui/")
        expect(replay).to_have_url(re.compile(r"/ui/login$"))

        assert daemon.terminate() == 0
    finally:
        api.http.close()
        if daemon.alive():
            daemon.proc.kill()
            daemon.proc.wait()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "report.txt").write_text("\n".join(report) + "\n")
        print("\n".join(report))
    log = daemon.text()
    for spec in specs.values():
        for _, data in stack.consumer_reads(spec):
            if data is not None:
                plaintexts.add(data[FIELD])
    no_plaintext(log, plaintexts)
    assert TOKEN not in log


def _overdue(api: Api) -> bool:
    """reports-batch's key is older than its max_age (the page calls it overdue) and the
    daemon's attempt to replace it failed."""
    rows = {row["target"]: row for row in api.http.get("/api/v1/targets").json()}
    row = rows["reports-batch"]
    return not row["compliant"] and row["state"] == "failing"
