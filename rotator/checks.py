"""`rotator check`: is this configuration able to rotate? One line per check, nothing changed.

Checks, in order: the configuration is valid; the Mistral Admin API answers and accepts the admin
key; the user keys are created for exists; each target's workspace exists and is not archived;
then every store authenticates and every destination is readable and writable (the destination
backends' ``check_access``). A failed prerequisite skips what depends on it (reported as failed).
Nothing is changed. Every call is a read except the AWS write probes: a ``PutSecretValue`` and an
``UpdateSecretVersionStage`` that AWS authorizes and then refuses (a request token already used,
a version id that does not exist). They prove the permissions, but they are write attempts:
CloudTrail records them as failed calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from rotator.config import Config
from rotator.contracts import CheckResult, KeyIssuer
from rotator.errors import RotatorError
from rotator.keys import Workspace
from rotator.render import plural

log = structlog.get_logger(__name__)


IssuerFactory = Callable[[Config], Awaitable[KeyIssuer]]


def render_checks(results: list[CheckResult]) -> str:
    """Aligned text: ``ok``/``FAIL``, subject, detail; a summary line last."""
    width = max((len(r.subject) for r in results), default=0)
    lines = [f"{'ok  ' if r.ok else 'FAIL'}  {r.subject:<{width}}  {r.detail}" for r in results]
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


async def run_checks(
    cfg: Config, *, config_only: bool = False, issuer_factory: IssuerFactory | None = None
) -> list[CheckResult]:
    """Run every check against ``cfg`` and return the verdicts (never raises for a backend)."""
    results = [
        CheckResult(
            "config",
            True,
            f"{cfg.source}: {plural(len(cfg.targets), 'target')},"
            f" {plural(len(cfg.stores), 'store')}",
        )
    ]
    if config_only:
        return results
    from rotator.app.wiring import check_destinations, check_issuer

    results += await _check_mistral(cfg, issuer_factory or check_issuer)
    results += await check_destinations(cfg)
    return results


async def _check_mistral(cfg: Config, factory: IssuerFactory) -> list[CheckResult]:
    admin = f"{cfg.mistral.admin_url.rstrip('/')}{cfg.mistral.admin_path_prefix}"
    issuer = await factory(cfg)
    try:
        try:
            workspaces = await issuer.list_workspaces()
        except RotatorError as exc:
            log.warning("check_failed", check="mistral_admin", error=str(exc))
            failed = [CheckResult("mistral admin API", False, f"{admin}: {exc}")]
            return failed + [
                CheckResult(f"target {t.name}", False, "not checked: the Admin API failed")
                for t in cfg.targets
            ]
        results = [
            CheckResult(
                "mistral admin API",
                True,
                f"{admin}: authenticated ({len(workspaces)} workspaces visible)",
            )
        ]
        results.append(await _check_user(cfg, issuer))
        by_id = {w.uuid: w for w in workspaces}
        results += [_check_workspace(t.name, t.workspace_id, by_id) for t in cfg.targets]
        return results
    finally:
        close = getattr(issuer, "aclose", None)
        if close is not None:
            await close()


async def _check_user(cfg: Config, issuer: KeyIssuer) -> CheckResult:
    user_id, email = cfg.mistral.user_id, cfg.mistral.user_email
    wanted = user_id or email or "?"
    try:
        user = await issuer.find_user(user_id=user_id, email=email)
    except RotatorError as exc:
        return CheckResult("mistral user", False, f"{wanted}: {exc}")
    if user is None:
        return CheckResult("mistral user", False, f"{wanted}: no such member in the organization")
    return CheckResult("mistral user", True, f"{user.uuid} ({user.email or 'no e-mail'})")


def _check_workspace(target: str, workspace_id: str, by_id: dict[str, Workspace]) -> CheckResult:
    subject = f"target {target}"
    ws = by_id.get(workspace_id)
    if ws is None:
        return CheckResult(subject, False, f"workspace {workspace_id}: not found")
    if ws.is_archived:
        return CheckResult(subject, False, f"workspace {workspace_id} ({ws.name}): archived")
    return CheckResult(subject, True, f"workspace {workspace_id} ({ws.name}) exists")
