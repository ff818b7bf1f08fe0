"""The status page's HTML, built as plain strings: every value that is not a literal of this
module goes through :func:`html.escape` (quotes included) on its way in, target names from the
configuration and error text from the state store alike. Free text is also passed through
:func:`rotator.logs.scrub`, so a key that reached an error message is masked here too.

Links are relative (``targets/<name>``, ``../``), so the page works behind a proxy that serves
it under another prefix. No inline style or script: the ``Content-Security-Policy`` allows
``'self'`` only (see :mod:`rotator.daemon.ui.assets`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from rotator.contracts import AuditEvent, JsonValue, RetiringKey
from rotator.daemon.ui.source import DaemonFacts, RotationRecord, Snapshot, TargetHistory
from rotator.daemon.ui.view import (
    ATTENTION,
    FILTER_ATTENTION,
    STATES,
    Row,
    breakdown,
    span,
    summary,
)
from rotator.durations import format_duration
from rotator.engine.steps import dest_tag
from rotator.logs import scrub
from rotator.render import plural

_PLAIN = re.compile(r"[a-z0-9-]+")
"""A target name as configuration allows it: safe in a URL and in HTML as it is."""
REFRESH_SECONDS = 30
"""How often the script reloads a page (pages work without it)."""
OLD_KEYS_SHOWN = 3
"""Old keys listed per row on the overview (the target page lists all)."""
RUNBOOKS = "docs/runbooks/"
"""Where the runbooks live in rotator's repository."""


def e(value: object) -> str:
    """``value`` as HTML text or attribute value (``&<>"'`` escaped)."""
    return html.escape(str(value), quote=True)


def text(value: str | None) -> str:
    """Free text (an error, a reason) escaped after masking anything shaped like a secret."""
    return e(scrub(value)) if value else ""


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is UTC else at.astimezone(UTC)


def when(at: datetime | None) -> str:
    """``2026-03-16 12:00Z`` (UTC, to the minute)."""
    return _utc(at).isoformat(" ", "minutes")[:16] + "Z" if at else "-"


def when_exactly(at: datetime | None) -> str:
    """``2026-03-16 12:00:03Z`` (UTC, to the second)."""
    return _utc(at).isoformat(" ", "seconds")[:19] + "Z" if at else "-"


def relative(at: datetime, now: datetime) -> str:
    """``in 6d4h`` or ``3m ago``."""
    if at >= now:
        return "in " + span(at - now) if at > now else "now"
    return span(now - at) + " ago"


def clock_ms(at: datetime) -> str:
    """``12:00:03.042Z``: a journal step's time of day, UTC, to the millisecond."""
    return f"{at.astimezone(UTC):%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def short_id(value: str | None) -> str:
    return value[:8] if value else "-"


def duration(delta: timedelta) -> str:
    """A step or rotation duration: ``850 ms``, ``12.4 s``, ``3m``."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{max(0.0, seconds) * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return span(delta)


_BADGES = {state: f'<span class="b {state}">{state}</span>' for state in STATES}


def badge(state: str) -> str:
    """A state's coloured badge (its name as text: the colour is never the only cue)."""
    return _BADGES.get(state) or f'<span class="b">{e(state)}</span>'


def age_meter(age: timedelta | None, max_age: timedelta, *, at_least: bool = False) -> str:
    """The key's age against ``max_age``: a native meter (green, then amber past 75 %, red past
    90 %) and the figures as text; ``at_least`` for a key older than rotator knows (one it never
    rotated: its age counts from when rotator first saw it)."""
    if age is None:
        return "-"
    ratio = age / max_age if max_age else 1.0
    value = max(0, min(1000, round(ratio * 1000)))
    old, limit = span(age), _span_of(max_age)
    figures = f"{'≥' if at_least else ''}{old}/{limit}"
    label = f"key age {'at least ' if at_least else ''}{old} of {limit}"
    return (
        f'<meter max=1000 low=750 high=900 optimum=0 value={value} aria-label="{label}">'
        f"</meter> {figures}"
    )


_SPANS: dict[timedelta, str] = {}


def _span_of(limit: timedelta) -> str:
    """:func:`span` of a policy duration (a few distinct values, many rows)."""
    found = _SPANS.get(limit)
    if found is None:
        found = span(limit)
        if len(_SPANS) < 256:
            _SPANS[limit] = found
    return found


# -- the frame ------------------------------------------------------------------------------


def document(
    title: str,
    body: str,
    *,
    root: str,
    refresh: bool = False,
    header: str = "",
) -> str:
    """A whole page. ``root`` is the relative path back to ``/ui/`` (``""`` or ``"../"``)."""
    refresh_attr = f" data-refresh={REFRESH_SECONDS}" if refresh else ""
    script = f'<script src="{root}ui.js" defer></script>' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title>"
        f'<link rel=stylesheet href="{root}ui.css">{script}</head>'
        f"<body{refresh_attr}>{header}{body}</body></html>"
    )


def top_bar(root: str, daemon: DaemonFacts | None, logout: str | None) -> str:
    """The header: the way home, this instance's role and version, and the logout button
    (``logout``: the form's CSRF token; None when the page needs no login)."""
    parts = ['<a class=skip href="#main">Skip to content</a><header>']
    parts.append(f'<a href="{root or "./"}">rotator status</a>')
    if daemon is not None:
        role = "leader" if daemon.leading else "standby"
        parts.append(f"<span>{role} · v{e(daemon.version)}</span>")
    if logout is not None:
        parts.append(
            f'<form method=post action="{root}logout"><input type=hidden name=csrf'
            f' value="{e(logout)}"><button>Log out</button></form>'
        )
    parts.append("</header>")
    return "".join(parts)


# -- the overview ---------------------------------------------------------------------------


def overview(
    snapshot: Snapshot,
    every: Sequence[Row],
    shown: Sequence[Row],
    *,
    query: str,
    state: str,
    logout: str | None,
) -> str:
    """``/ui/``: the summary line, the filters, one row per target shown, the daemon panel."""
    now = snapshot.now
    line = summary(every)
    urgent = any(r.needs_attention for r in every)
    parts = [f"<main id=main><h1 class={'bad' if urgent else 'ok'}>{e(line)}</h1>"]
    parts.append(f"<p class=sub>{e(breakdown(every))} · read {when_exactly(now)}</p>")
    parts.append(filters(query, state))
    if len(shown) != len(every):
        parts.append(
            f'<p>Showing {len(shown)} of {len(every)} targets. <a href="./">Show all</a></p>'
        )
    parts.append(
        "<div class=w><table id=t><caption class=mut>Targets, what needs a human first"
        "</caption><thead><tr><th scope=col>Target<th scope=col>State<th scope=col>Key"
        "<th scope=col>Age / max_age<th scope=col>Next rotation<th scope=col>Old keys, revoked"
        "<th scope=col>Last outcome<th scope=col>Destinations</thead><tbody>"
    )
    memo: dict[str, str] = {}
    parts.extend(overview_row(row, now, memo) for row in shown)
    if not shown:
        parts.append("<tr><td colspan=8>No target matches.</td></tr>")
    parts.append("</tbody></table></div>")
    parts.append(daemon_panel(snapshot.daemon, now))
    parts.append("</main>")
    title = f"rotator: {line}"
    return document(
        title,
        "".join(parts),
        root="",
        refresh=True,
        header=top_bar("", snapshot.daemon, logout),
    )


def filters(query: str, state: str) -> str:
    """The filter form (a GET: the filters live in the query string)."""
    options = ["<option value=''>any</option>"]
    for value, label in ((FILTER_ATTENTION, "needs attention"), *((s, s) for s in STATES)):
        selected = " selected" if value == state else ""
        options.append(f"<option value={value}{selected}>{label}</option>")
    return (
        "<form class=f method=get action='./' role=search>"
        f"<label>Name contains<input name=q value='{e(query)}' maxlength=100></label>"
        f"<label>State<select name=state>{''.join(options)}</select></label>"
        "<button>Filter</button></form>"
    )


def overview_row(row: Row, now: datetime, memo: dict[str, str] | None = None) -> str:
    """One target's row (the hot loop of the page: 1000 of them must render in a few ms).
    ``memo`` keeps what a reason became for the rows of one page (reasons repeat)."""
    attention = " class=a" if row.needs_attention else ""
    reason = ""
    if row.reason:
        shown = memo.get(row.reason) if memo is not None else None
        if shown is None:
            shown = text(row.reason)
            if memo is not None:
                memo[row.reason] = shown
        reason = f"<small>{shown}</small>"
    key = (
        f"<code>{e(short_id(row.key_id))}</code><small>fp {e(row.fingerprint or '-')}</small>"
        if row.key_id
        else "-"
    )
    late = " class=bad" if row.next_at < now else ""
    old = old_keys(row.retiring, now)
    failures = f"<small>{plural(row.failures, 'failure')} in a row</small>" if row.failures else ""
    name = e(row.name)
    href = name if _PLAIN.fullmatch(row.name) else e(quote(row.name))
    return (
        f'<tr{attention}><th scope=row><a href="targets/{href}">{name}</a>'
        f"<td>{badge(row.state)}{reason}"
        f"<td>{key}"
        f"<td>{age_meter(row.age, row.max_age, at_least=row.last_rotated_at is None)}"
        f"<td><span{late}>{relative(row.next_at, now)}</span><small>{when(row.next_at)}</small>"
        f"<td>{old}"
        f"<td>{e(row.last_outcome)}{failures}"
        f"<td>{e(', '.join(row.stores)) or '-'}"
    )


def old_keys(retiring: Sequence[RetiringKey], now: datetime) -> str:
    """Old keys and their revocation deadlines, the first :data:`OLD_KEYS_SHOWN`."""
    if not retiring:
        return "-"
    items = [
        f"<li><code>{e(short_id(k.key_id))}</code> {relative(k.revoke_due_at, now)}"
        f"<small>{when(k.revoke_due_at)}</small>"
        for k in retiring[:OLD_KEYS_SHOWN]
    ]
    more = len(retiring) - OLD_KEYS_SHOWN
    if more > 0:
        items.append(f"<li>+{more} more")
    return f"<ul class=k>{''.join(items)}</ul>"


def daemon_panel(daemon: DaemonFacts, now: datetime) -> str:
    """Version, role, configuration, state store, uptime, last reload."""
    if daemon.leading:
        role = "leader (this instance rotates)"
    elif daemon.leader:
        role = f"standby; {daemon.leader} leads"
    else:
        role = "standby; another instance leads"
    identity = f" · {e(daemon.identity)}" if daemon.identity else ""
    loaded = (
        f"{when_exactly(daemon.config_loaded_at)} ({relative(daemon.config_loaded_at, now)})"
        if daemon.config_loaded_at
        else "-"
    )
    reload = "none since the start"
    if daemon.last_reload is not None:
        last = daemon.last_reload
        verdict = "<span class=ok>applied</span>" if last.ok else "<span class=bad>failed</span>"
        detail = f": {text(last.message)}" if last.message else ""
        reload = f"{verdict} {when_exactly(last.at)}{detail}"
    ready = "<span class=ok>ready</span>" if daemon.ready else "<span class=bad>not ready</span>"
    if not daemon.ready:
        ready += f": {text(daemon.ready_reason)}"
    started = f"{when_exactly(daemon.started_at)}, " if daemon.started_at else ""
    rows = [
        ("Version", f"rotator {e(daemon.version)}"),
        ("Role", f"{e(role)} · election {e(daemon.election)}{identity}"),
        ("Readiness", ready),
        ("Configuration", f"{e(daemon.config_source)}, loaded {loaded}"),
        ("Last reload", reload),
        ("State store", e(daemon.store)),
        ("Up", f"{started}{span(daemon.uptime)}"),
    ]
    items = "".join(f"<dt>{k}<dd>{v}" for k, v in rows)
    return f"<section aria-labelledby=dh><h2 id=dh>Daemon</h2><dl>{items}</dl></section>"


# -- a target's page ------------------------------------------------------------------------


def target(history: TargetHistory, row: Row, *, logout: str | None) -> str:
    """``/ui/targets/<name>``: facts, what to do, old keys, last rotations (timelines),
    revoked keys, audit entries."""
    snapshot = history.snapshot
    now = snapshot.now
    state = snapshot.states.get(row.name)
    current = state.current if state else None
    target_cfg = snapshot.cfg.target(row.name)
    policy = target_cfg.policy
    crumbs = f'<nav aria-label="Breadcrumb"><a href="../">All targets</a> / {e(row.name)}</nav>'
    parts = [f"<main id=main>{crumbs}", f"<h1>{e(row.name)} {badge(row.state)}</h1>"]
    if row.reason:
        parts.append(f"<p>{text(row.reason)}</p>")
    parts.append(next_steps(row, snapshot.daemon.config_source, now))
    adopted = state.adopted_key_id if state else None
    key_id = f"<code>{e(row.key_id)}</code>" if row.key_id else "none yet"
    if not row.key_id and adopted:
        key_id = f"<code>{e(adopted)}</code> (adopted: served before rotator)"
    key_rows = [
        ("Key id", key_id),
        ("Fingerprint", f"<code>{e(row.fingerprint)}</code>" if row.fingerprint else "-"),
        ("Rotated", _at(row.last_rotated_at, now)),
        ("Age", age_meter(row.age, row.max_age, at_least=row.last_rotated_at is None)),
        ("Created", _at(current.created_at if current else None, now)),
        (
            "Expires",
            e(current.expiration.isoformat()) if current and current.expiration else "never",
        ),
    ]
    backoff = state.backoff_until if state and state.consecutive_failures else None
    plan_rows = [
        ("Next rotation", _at(row.next_at, now)),
        ("Schedule", e(policy.schedule)),
        ("max_age", e(format_duration(policy.max_age))),
        ("Grace", e(format_duration(policy.grace))),
        ("Failures", f"{row.failures} in a row" if row.failures else "none"),
        ("Backoff until", _at(backoff, now)),
    ]
    dests = "".join(f"<li><code>{e(d)}</code>" for d in row.destinations) or "<li>-"
    parts.append(
        "<div class=panel>"
        f"<section class=box aria-labelledby=hk><h2 id=hk>Current key</h2>{_dl(key_rows)}"
        "</section>"
        f"<section class=box aria-labelledby=hp><h2 id=hp>Plan</h2>{_dl(plan_rows)}</section>"
        "<section class=box aria-labelledby=hd><h2 id=hd>Destinations</h2>"
        f"<ul class=k>{dests}</ul></section></div>"
    )
    parts.append(retiring_table(row.retiring, now))
    parts.append(rotations_section(history.rotations, row.destinations, now))
    parts.append(revoked_table(history.audit))
    parts.append(audit_table(history.audit))
    parts.append("</main>")
    return document(
        f"rotator: {row.name} ({row.state})",
        "".join(parts),
        root="../",
        refresh=True,
        header=top_bar("../", snapshot.daemon, logout),
    )


def _at(at: datetime | None, now: datetime) -> str:
    return f"{when_exactly(at)} ({relative(at, now)})" if at else "-"


def _dl(rows: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{k}<dd>{v}" for k, v in rows) + "</dl>"


def next_steps(row: Row, config: str, now: datetime) -> str:
    """For a target that needs a human (or an old key past its deadline): the commands to run
    next and the runbook."""
    name = row.name
    cfg = f"rotator --config {config}"
    overdue_keys = [k for k in row.retiring if now - k.revoke_due_at > timedelta(minutes=15)]
    if row.state == "stuck":
        runbook = "rotation-stuck.md"
        lead = "Both keys are valid and the rotation is open: it will not finish on its own."
        commands = [
            f"{cfg} status",
            f"{cfg} history {name} --limit 5",
            f"{cfg} check",
            f"{cfg} recover",
        ]
    elif row.state in {"failing", "overdue"}:
        runbook = "rotation-failed.md"
        lead = (
            "Rotations fail; the old key is still served and working."
            if row.state == "failing"
            else "The served key is older than its policy allows."
        )
        commands = [
            f"{cfg} history {name} --limit 2",
            f"{cfg} check",
            f"{cfg} rotate {name}",
        ]
    elif overdue_keys:
        runbook = "old-keys-not-revoked.md"
        lead = "An old key is past its revocation deadline."
        commands = [f"{cfg} status", f"{cfg} revoke-due"]
    else:
        return ""
    shell = "\n".join(f"$ {c}" for c in commands)
    return (
        "<section class='box todo' aria-labelledby=hn><h2 id=hn>What to do</h2>"
        f"<p>{e(lead)}</p><pre><code>{e(shell)}</code></pre>"
        f"<p>Runbook: <code>{e(RUNBOOKS + runbook)}</code> in rotator's repository.</p>"
        "</section>"
    )


def retiring_table(retiring: Sequence[RetiringKey], now: datetime) -> str:
    head = "<h2>Old keys awaiting revocation</h2>"
    if not retiring:
        return head + "<p class=mut>None.</p>"
    body = "".join(
        f"<tr><td><code>{e(k.key_id)}</code><td><code>{e(k.fingerprint or '-')}</code>"
        f"<td class=nw>{_at(k.revoke_due_at, now)}<td><code>{e(short_id(k.rotation_id))}</code>"
        for k in retiring
    )
    return (
        f"{head}<div class=w><table><thead><tr><th scope=col>Key id<th scope=col>Fingerprint"
        "<th scope=col>Revoke at<th scope=col>Replaced by rotation</thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def step_label(step: str, tags: dict[str, str]) -> str:
    """A journal step as read: ``staged:3a61e95cfe`` becomes ``staged vault:secret/…``."""
    name, _, tag = step.partition(":")
    if tag and tag in tags:
        return f"{name} {tags[tag]}"
    return step


def rotations_section(
    records: Sequence[RotationRecord], destinations: Sequence[str], now: datetime
) -> str:
    """The last rotations, newest first, each a timeline of its journal steps with the time
    each took (from the step before, the first from the rotation's start)."""
    head = "<h2>Last rotations</h2>"
    if not records:
        return head + "<p class=mut>None yet.</p>"
    tags = {dest_tag(d): d for d in destinations}
    parts = [head]
    for i, record in enumerate(records):
        r = record.rotation
        end = r.finished_at or now
        took = duration(end - r.started_at)
        outcome = r.outcome or f"open ({r.state})"
        kind = " · emergency" if r.emergency else ""
        parts.append(
            f"<details{' open' if i == 0 else ''}><summary>{when_exactly(r.started_at)} · "
            f"<b>{e(outcome)}</b> · {took}{kind} · <code>{e(r.rotation_id)}</code></summary>"
        )
        facts = [
            ("New key", f"<code>{e(r.new_key_id)}</code>" if r.new_key_id else "-"),
            ("Replaced", ", ".join(f"<code>{e(k)}</code>" for k in r.old_key_ids) or "-"),
        ]
        if r.error:
            facts.append(("Error", f"<span class=err>{text(r.error)}</span>"))
        parts.append(_dl(facts))
        parts.append(timeline(record, tags))
        parts.append("</details>")
    return "".join(parts)


def timeline(record: RotationRecord, tags: dict[str, str]) -> str:
    """A rotation's journal as a table: each step, when it was journaled, the time since the
    step before (the first: since the rotation started) and a bar of that time against the
    longest step's."""
    if not record.steps:
        return "<p class=mut>No step journaled.</p>"
    previous = record.rotation.started_at
    took = []
    for step in record.steps:
        took.append(step.at - previous)
        previous = step.at
    longest = max(took) or timedelta(microseconds=1)
    body = "".join(
        f"<tr><td><code>{e(step_label(step.step, tags))}</code><td>{clock_ms(step.at)}"
        f"<td>{duration(spent)}<td><span class='bar w{round(10 * (spent / longest))}'></span>"
        for step, spent in zip(record.steps, took, strict=True)
    )
    return (
        "<div class=w><table class=tl><thead><tr><th scope=col>Step<th scope=col>At"
        "<th scope=col>Took<th scope=col>Share</thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def revoked_table(audit: Sequence[AuditEvent]) -> str:
    head = "<h2>Revoked keys</h2>"
    revoked = [a for a in audit if a.event == "key.revoked"]
    if not revoked:
        return head + "<p class=mut>None in the recent audit entries.</p>"
    body = "".join(
        f"<tr><td><code>{e(_fact(a.facts, 'key_id'))}</code>"
        f"<td><code>{e(_fact(a.facts, 'fingerprint'))}</code><td class=nw>{when_exactly(a.at)}"
        for a in revoked
    )
    return (
        f"{head}<div class=w><table><thead><tr><th scope=col>Key id<th scope=col>Fingerprint"
        f"<th scope=col>Revoked at</thead><tbody>{body}</tbody></table></div>"
    )


def audit_table(audit: Sequence[AuditEvent]) -> str:
    head = "<h2>Audit entries</h2>"
    if not audit:
        return head + "<p class=mut>None.</p>"
    body = "".join(
        f"<tr><td>{a.seq}<td class=nw>{when_exactly(a.at)}<td><code>{e(a.event)}</code>"
        f"<td><code>{e(short_id(a.rotation_id))}</code><td>{facts_text(a.facts)}"
        for a in audit
    )
    return (
        f"{head}<div class=w><table><thead><tr><th scope=col>#<th scope=col>At"
        "<th scope=col>Event<th scope=col>Rotation<th scope=col>Facts</thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def _fact(facts: dict[str, JsonValue], name: str) -> str:
    value = facts.get(name)
    return str(value) if value is not None else "-"


def facts_text(facts: dict[str, JsonValue], limit: int = 300) -> str:
    """An audit row's facts as ``key=value`` pairs, masked, escaped and cut to ``limit``."""
    pairs = []
    for key, value in facts.items():
        if value in (None, "", [], {}):
            continue
        shown = value if isinstance(value, str) else _compact(value)
        pairs.append(f"{key}={shown}")
    line = scrub(" ".join(pairs))
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return e(line)


def _compact(value: JsonValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return str(value)


# -- login and messages ---------------------------------------------------------------------


def login(csrf: str, next_path: str, message: str = "") -> str:
    """The login form (no JavaScript): the admin token, posted with the form's CSRF token."""
    note = f"<p class=err role=alert>{e(message)}</p>" if message else ""
    body = (
        "<main id=main class=login><h1>rotator status</h1>"
        "<p>Sign in with the daemon's admin token (<code>server.admin_token</code>).</p>"
        f"{note}<form method=post action=login>"
        f'<input type=hidden name=csrf value="{e(csrf)}">'
        f'<input type=hidden name=next value="{e(next_path)}">'
        "<label for=token>Admin token</label>"
        "<input id=token name=token type=password autocomplete=current-password required"
        " autofocus><button>Sign in</button></form></main>"
    )
    return document("rotator: sign in", body, root="")


def message(title: str, detail: str, *, root: str = "") -> str:
    """A short page for a refusal or an error (no facts of the daemon in it)."""
    body = (
        f"<main id=main class=login><h1>{e(title)}</h1><p>{e(detail)}</p>"
        f'<p><a href="{root or "./"}">Back to the status page</a></p></main>'
    )
    return document(f"rotator: {title}", body, root=root)


def login_target(next_path: str) -> str:
    """The login page's address with ``next`` (relative to ``/ui/``)."""
    return "login?" + urlencode({"next": next_path}) if next_path else "login"


__all__ = [
    "ATTENTION",
    "REFRESH_SECONDS",
    "document",
    "login",
    "login_target",
    "message",
    "overview",
    "target",
]
