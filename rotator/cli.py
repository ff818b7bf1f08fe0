"""The command line (docs/cli.md): parsing, exit codes and output only.

Exit status: 0 success; 1 an operation failed (the system is left safe); 2 bad usage or invalid
configuration — one line naming the file, the field path and the problem, never a traceback.
Logs go to stderr so stdout carries only the command's output (or its one JSON document).

Imports are the command's own: at module level only typer and the standard library, so that
``--help`` and a usage error stay quick; the configuration (pydantic, PyYAML), logging
(structlog), asyncio and the engine are imported by the commands that use them, and the backends'
SDKs and the HTTP server only where the composition root needs them (``rotator status`` builds no
destination client). ``rotator --version`` never gets here (:mod:`rotator.__main__`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

# typer vendors its own click; its exception classes are the ones raised here.
from typer._click.exceptions import ClickException, UsageError

from rotator import __version__
from rotator.errors import ConfigError, RotatorError, UnreadableAuditRowError

if TYPE_CHECKING:
    from rotator.config import Config
    from rotator.engine.engine import Engine
    from rotator.engine.rotation import RotationResult
    from rotator.logs import LogFormat

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
BARE_USAGE = "Usage: rotator [OPTIONS] COMMAND [ARGS]...\nTry 'rotator --help' for help."

app = typer.Typer(
    name="rotator",
    help="Rotate Mistral AI API keys into Vault/OpenBao and AWS Secrets Manager, safely.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
dev_app = typer.Typer(help="Local stand-ins for demos and tests; never for production.")
app.add_typer(dev_app, name="dev")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Configuration file (default: $ROTATOR_CONFIG).",
        show_default=False,
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@dataclass
class _Globals:
    config: Path | None
    log_level: str
    log_format: LogFormat
    strict_permissions: bool = False
    loaded: dict[Path | None, Config] = dataclasses.field(default_factory=dict)


def _globals(ctx: typer.Context) -> _Globals:
    obj = ctx.find_root().obj
    assert isinstance(obj, _Globals)
    return obj


def _load(ctx: typer.Context, config: Path | None) -> Config:
    """The configuration named after the command, else before it, else by $ROTATOR_CONFIG;
    read once per command however often asked for."""
    from rotator.config import load_config

    settings = _globals(ctx)
    path = config or settings.config
    if path not in settings.loaded:
        settings.loaded[path] = load_config(path, strict_permissions=settings.strict_permissions)
    return settings.loaded[path]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rotator {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    ctx: typer.Context,
    config: ConfigOption = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    log_format: Annotated[
        str, typer.Option("--log-format", help="auto (console on a TTY, else JSON), json, console.")
    ] = "auto",
    strict_permissions: Annotated[
        bool,
        typer.Option(
            "--strict-permissions",
            help="Refuse a secret file other users may read (default: warn).",
        ),
    ] = False,
    _show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    level = log_level.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise typer.BadParameter(f"unknown level {log_level!r}", param_hint="--log-level")
    if log_format not in {"auto", "json", "console"}:
        raise typer.BadParameter(f"unknown format {log_format!r}", param_hint="--log-format")
    fmt: LogFormat = "json" if log_format == "json" else "auto"
    if log_format == "console":
        fmt = "console"
    ctx.obj = _Globals(
        config=config, log_level=level, log_format=fmt, strict_permissions=strict_permissions
    )
    from rotator.logs import configure_logging

    configure_logging(level=level, fmt=fmt, stream=sys.stderr)


@app.command()
def check(
    ctx: typer.Context,
    config: ConfigOption = None,
    config_only: Annotated[
        bool, typer.Option("--config-only", help="Validate the configuration and stop.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Validate the config, then reach and authenticate to every backend; a line per check."""
    import asyncio

    from rotator.checks import render_checks, run_checks

    cfg = _load(ctx, config)
    results = asyncio.run(run_checks(cfg, config_only=config_only))
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        typer.echo(render_checks(results))
    raise typer.Exit(EXIT_OK if all(r.ok for r in results) else EXIT_FAILED)


def _with_engine(
    ctx: typer.Context,
    config: Path | None,
    work: Callable[[Engine], Awaitable[T]],
    *,
    create_state: bool = True,
    backends: bool = True,
) -> T:
    """Load the configuration, build the engine, run ``work`` on it, close it.

    Only the commands that change something create a missing state database
    (``create_state``); the read-only ones say there is none (exit 2). The commands that read
    the state store alone pass ``backends=False``: no Mistral or destination client is built
    (see :func:`rotator.app.wiring.build_engine`), and no webhook is needed.

    The configured webhooks hear the engine's alerts (stuck, failed, refused revocations) from
    the CLI as from the daemon; deliveries in flight get a few seconds before the command exits.
    """
    import asyncio

    from rotator.app.wiring import build_engine

    cfg = _load(ctx, config)

    async def go() -> T:
        notifier = None
        if backends and cfg.notifications.webhooks:
            from rotator.daemon.notify import Notifier

            notifier = Notifier.from_config(cfg)
        engine = await build_engine(
            cfg, on_alert=notifier, create_state=create_state, backends=backends
        )
        try:
            return await work(engine)
        finally:
            await engine.close()
            if notifier is not None:
                await notifier.aclose(timeout=10.0)

    return asyncio.run(go())


def _target_names(
    ctx: typer.Context, config: Path | None, targets: list[str], all_: bool
) -> list[str]:
    cfg = _load(ctx, config)
    known = [t.name for t in cfg.targets]
    if all_ and targets:
        raise typer.BadParameter("give target names or --all, not both")
    if all_:
        return known
    if not targets:
        raise typer.BadParameter("name at least one target, or --all")
    for name in targets:
        if name not in known:
            raise typer.BadParameter(
                f"unknown target {name!r} (known: {', '.join(known) or 'none'})",
                param_hint="TARGET",
            )
    return targets


@app.command()
def rotate(
    ctx: typer.Context,
    targets: Annotated[list[str] | None, typer.Argument(help="Targets to rotate.")] = None,
    config: ConfigOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Rotate every configured target.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    emergency: Annotated[
        bool,
        typer.Option("--emergency", help="Leaked key: no grace, revoke as soon as served."),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Block until the old keys are revoked.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Rotate now: create, verify, stage, read back, promote; revoke after the grace."""
    names = _target_names(ctx, config, targets or [], all_)

    async def work(engine: Engine) -> list[dict[str, object]]:
        if dry_run:
            return [await engine.plan(n, emergency=emergency) for n in names]
        results = await engine.rotate_many(names, emergency=emergency)
        if wait:
            results = await _wait_for_revocation(engine, results)
        return [r.as_dict() for r in results]

    rows = _with_engine(ctx, config, work)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        from rotator.render import table

        typer.echo(
            table(
                rows,
                ["target", "outcome", "new_key_id", "revoked_key_ids", "revoke_due_at", "error"],
            )
        )
        if dry_run:
            for row in rows:
                typer.echo(json.dumps(row["plan"], indent=2))
    ok = {"rotated", "promoted", "planned"}
    raise typer.Exit(EXIT_OK if all(r["outcome"] in ok for r in rows) else EXIT_FAILED)


async def _wait_for_revocation(
    engine: Engine, results: list[RotationResult]
) -> list[RotationResult]:
    """``--wait``: sleep until each promoted target's revoke deadline, then revoke."""
    from rotator.engine.steps import Outcome

    out: list[RotationResult] = []
    for result in results:
        final = result
        if result.outcome is Outcome.PROMOTED and result.revoke_due_at is not None:
            delay = (result.revoke_due_at - engine.clock.now()).total_seconds()
            await engine.clock.sleep(max(0.0, delay))
            revoked = [
                r.key_id
                for r in await engine.revoke_due()
                if r.target == result.target and r.outcome in {"revoked", "already_gone"}
            ]
            if revoked:
                final = dataclasses.replace(
                    result,
                    outcome=Outcome.ROTATED,
                    revoked_key_ids=tuple(revoked),
                    revoke_due_at=None,
                )
        out.append(final)
    return out


@app.command()
def recover(
    ctx: typer.Context,
    config: ConfigOption = None,
    sweep_orphans: Annotated[
        bool,
        typer.Option("--sweep-orphans", help="Delete keys with our prefix nobody accounts for."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Finish or undo every interrupted rotation; exit 0 when every target is consistent."""

    async def work(engine: Engine) -> dict[str, list[dict[str, object]]]:
        results, orphans = await engine.recover(sweep_orphans=sweep_orphans)
        still_open = await engine.open_rotations()
        return {
            "rotations": [r.as_dict() for r in results],
            "orphans": [o.as_dict() for o in orphans],
            # e.g. a roll back whose cleanup could not finish: not consistent yet
            "still_open": [
                {"target": r.target, "rotation_id": r.rotation_id, "state": r.state}
                for r in still_open
            ],
        }

    report = _with_engine(ctx, config, work)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        from rotator.render import plural, table

        typer.echo(plural(len(report["rotations"]), "interrupted rotation"))
        if report["rotations"]:
            typer.echo(table(report["rotations"], ["target", "rotation_id", "outcome", "error"]))
        typer.echo(plural(len(report["orphans"]), "orphan key"))
        if report["orphans"]:
            typer.echo(table(report["orphans"], ["target", "key_id", "name", "deleted", "why"]))
    consistent = all(
        r["outcome"] in {"rotated", "promoted", "rolled_back"} for r in report["rotations"]
    )
    consistent = consistent and all(bool(o["deleted"]) for o in report["orphans"])
    if report["still_open"] and not as_json:
        from rotator.render import plural

        still = plural(len(report["still_open"]), "rotation")
        typer.echo(f"{still} still open (run recover again)")
    consistent = consistent and not report["still_open"]
    raise typer.Exit(EXIT_OK if consistent else EXIT_FAILED)


@app.command("revoke-due")
def revoke_due(
    ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Revoke old keys whose grace deadline has passed and that no destination serves."""

    async def work(engine: Engine) -> list[dict[str, str]]:
        return [r.as_dict() for r in await engine.revoke_due()]

    rows = _with_engine(ctx, config, work, create_state=False)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        from rotator.render import table

        typer.echo(
            table(rows, ["target", "key_id", "outcome", "detail"]) if rows else "nothing due"
        )
    raise typer.Exit(EXIT_OK if all(r["outcome"] != "refused" for r in rows) else EXIT_FAILED)


@app.command()
def status(
    ctx: typer.Context,
    targets: Annotated[
        list[str] | None, typer.Argument(help="Only these targets (default: all).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per target: state, key, age, next due, revoke due, compliance."""
    only = set(_target_names(ctx, config, targets, False)) if targets else None

    async def work(engine: Engine) -> list[dict[str, object]]:
        rows = []
        now = engine.clock.now()
        from rotator.render import age

        for st in await engine.status():
            if only is not None and st.target not in only:
                continue
            row = st.as_dict()
            row["age"] = age(st.last_rotated_at, now)
            rows.append(row)
        return rows

    rows = _with_engine(ctx, config, work, create_state=False, backends=False)
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.items() if k != "age"} for r in rows], indent=2))
    else:
        from rotator.render import table

        typer.echo(
            table(
                rows,
                [
                    "target",
                    "state",
                    "key_id",
                    "age",
                    "next_due_at",
                    "revoke_due_at",
                    "compliant",
                    "reason",
                ],
            )
        )


@app.command()
def history(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Argument(help="Only this target.")] = None,
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N events.")] = 50,
    as_json: JsonOption = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the audit log's hash chain.")
    ] = False,
    expect_count: Annotated[
        int | None,
        typer.Option(
            "--expect-count",
            min=1,
            help="With --verify (implied): the chain must still have at least N rows.",
        ),
    ] = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            help="With --verify (implied): a published head hash (16 to 64 hex characters)"
            " that row --expect-count, or some row, must still have.",
        ),
    ] = None,
) -> None:
    """The audit trail, newest first."""
    from rotator.contracts import AuditAnchor
    from rotator.render import iso, table, to_csv

    if target is not None:
        _target_names(ctx, config, [target], False)
    if expect_head is not None and not re.fullmatch(r"[0-9a-fA-F]{16,64}", expect_head):
        raise typer.BadParameter("must be 16 to 64 hex characters", param_hint="'--expect-head'")
    anchor = AuditAnchor(count=expect_count, head=expect_head.lower() if expect_head else None)
    verify = verify or anchor != AuditAnchor()

    async def work(engine: Engine) -> tuple[list[dict[str, object]], str | None, bool]:
        verdict = await engine.verify_audit(anchor) if verify else None
        try:
            events = await engine.audit_events(target, limit=limit)
        except UnreadableAuditRowError:
            if verdict is None or verdict.ok:
                raise
            events = []  # the verdict says which row and why
        rows: list[dict[str, object]] = [
            {
                "seq": e.seq,
                "at": iso(e.at),
                "event": e.event,
                "target": e.target,
                "rotation_id": e.rotation_id,
                "facts": e.facts,
            }
            for e in events
        ]
        if verdict is None:
            return rows, None, True
        return rows, verdict.line(), verdict.ok

    rows, verdict, ok = _with_engine(ctx, config, work, create_state=False, backends=False)
    columns = ["seq", "at", "event", "target", "rotation_id", "facts"]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif as_csv:
        typer.echo(to_csv(rows, columns), nl=False)
    else:
        typer.echo(
            table([{**r, "facts": json.dumps(r["facts"], sort_keys=True)} for r in rows], columns)
        )
    if verdict is not None:
        typer.echo(verdict, err=as_json or as_csv)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


@app.command()
def report(
    ctx: typer.Context,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV, one row per key.")] = False,
    as_markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown.")] = False,
    unused_days: Annotated[
        int, typer.Option("--unused-days", min=1, help="Flag keys unused for N days or more.")
    ] = 30,
) -> None:
    """Compliance per workspace: managed vs unmanaged keys, no expiration, too old, unused."""
    from rotator.report import build_report

    if as_json + as_csv + as_markdown > 1:
        raise typer.BadParameter("give at most one of --json, --csv and --markdown")

    async def work(engine: Engine) -> str:
        found = await build_report(
            engine.cfg,
            issuer=engine,
            store=engine,
            now=engine.clock.now(),
            unused_days=unused_days,
        )
        if as_json:
            return found.to_json() + "\n"
        if as_csv:
            return found.to_csv()
        return found.to_markdown() if as_markdown else found.to_text()

    typer.echo(_with_engine(ctx, config, work, create_state=False), nl=False)


@app.command()
def adopt(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="The target whose served key this is.")],
    key_id: Annotated[str, typer.Option("--key-id", help="The Mistral key id to adopt.")],
    config: ConfigOption = None,
) -> None:
    """Declare the served key rotator did not create; the next rotation revokes it."""
    _target_names(ctx, config, [target], False)

    async def work(engine: Engine) -> None:
        await engine.adopt(target, key_id)

    try:
        _with_engine(ctx, config, work)
    except ValueError as exc:  # e.g. the key is already the target's current managed key
        raise typer.BadParameter(str(exc), param_hint="--key-id") from None
    typer.echo(f"{target}: adopted key {key_id}; the next rotation revokes it after its grace")


@app.command(
    help=(
        "The daemon: scheduled rotations, due revocations, the HTTP server, recovery at start."
        " Logs go to stdout. SIGHUP reloads the configuration (an invalid one is logged and the"
        " old one kept); SIGTERM or SIGINT stop taking work, let in-flight rotations finish (up"
        " to 60 s) and exit 0. Under systemd: Type=notify, and secrets from"
        " $CREDENTIALS_DIRECTORY (admin_key_file: ${CREDENTIALS_DIRECTORY}/mistral-admin-key)."
    )
)
def run(ctx: typer.Context, config: ConfigOption = None) -> None:
    """The daemon (``rotator run``); see the help text."""
    import asyncio

    from rotator.daemon.runner import run_daemon
    from rotator.logs import configure_logging

    settings = _globals(ctx)
    configure_logging(level=settings.log_level, fmt=settings.log_format, stream=sys.stdout)
    cfg = _load(ctx, config)
    raise typer.Exit(asyncio.run(run_daemon(cfg, config_path=config or settings.config)))


@dev_app.command("standin")
def dev_standin(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free port).", min=0, max=65535)] = 18080,
    admin_key: Annotated[
        str, typer.Option("--admin-key", help="The Admin API key the stand-in accepts.")
    ] = "standin-admin-key",
) -> None:
    """Run the local Mistral stand-in (Admin API + /v1/models) until Ctrl-C.

    Exits 2 for a bad --host or an empty --admin-key, 1 if the address cannot be listened on
    or the dev kit (rotator_dev) is not installed (the wheel and the image leave it out).
    """
    import errno
    import socket

    try:  # the one import of the dev kit; the wheel and the image leave it out
        from rotator_dev.standin import run_standin
    except ModuleNotFoundError as exc:
        if exc.name not in {"rotator_dev", "rotator_dev.standin"}:
            raise
        print(
            "rotator: the dev kit (rotator_dev) is not installed here; it comes with a checkout"
            " of the repository, not with the wheel or the image",
            file=sys.stderr,
        )
        raise typer.Exit(EXIT_FAILED) from None

    if not admin_key:
        raise typer.BadParameter("must not be empty", param_hint="'--admin-key'")
    try:
        run_standin(host=host, port=port, admin_key=admin_key)
    except socket.gaierror:
        raise typer.BadParameter(f"cannot resolve {host!r}", param_hint="'--host'") from None
    except OSError as exc:  # run_standin's contract: the address could not be bound
        if exc.errno == errno.EADDRNOTAVAIL:
            raise typer.BadParameter(
                f"{host!r} is not an address of this machine", param_hint="'--host'"
            ) from None
        shown = f"[{host}]" if ":" in host else host
        problem = exc.strerror or type(exc).__name__
        print(f"rotator: cannot listen on {shown}:{port}: {problem}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED) from None


def _scrub(text: str) -> str:
    """:func:`rotator.logs.scrub`, imported when a message is shown (it brings in structlog)."""
    from rotator.logs import scrub

    return scrub(text)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `rotator` console script; maps every failure to an exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args:  # bare `rotator`: the usage line on stderr, not the whole help on stdout
        print(BARE_USAGE, file=sys.stderr)
        sys.exit(EXIT_USAGE)
    try:
        code = app(args=args, prog_name="rotator", standalone_mode=False)
    except ConfigError as exc:
        print(_scrub(str(exc)), file=sys.stderr)
        code = EXIT_USAGE
    except UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        print(f"rotator: {exc.format_message()}{hint}", file=sys.stderr)
        code = EXIT_USAGE
    except RotatorError as exc:
        print(f"rotator: {_scrub(str(exc))}", file=sys.stderr)
        code = EXIT_FAILED
    except ClickException as exc:
        print(f"rotator: {exc.format_message()}", file=sys.stderr)
        code = EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        print("rotator: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        import structlog

        structlog.get_logger(__name__).exception("internal_error")
        print(f"rotator: internal error: {type(exc).__name__}: {_scrub(str(exc))}", file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else EXIT_OK)
