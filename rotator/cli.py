"""The command line (CONTRACT.md "Commands"): parsing, exit codes and output only.

Exit status: 0 success; 1 an operation failed (the system is left safe); 2 bad usage or invalid
configuration — one line naming the file, the field path and the problem, never a traceback.
Logs go to stderr so stdout carries only the command's output (or its one JSON document).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
import typer

# typer vendors its own click; its exception classes are the ones raised here.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from rotator import __version__
from rotator.config import Config, load_config
from rotator.errors import ConfigError
from rotator.logs import LogFormat, configure_logging, scrub

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="rotator",
    help="Rotate Mistral AI API keys into Vault/OpenBao and AWS Secrets Manager, safely.",
    no_args_is_help=True,
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


def _globals(ctx: typer.Context) -> _Globals:
    obj = ctx.find_root().obj
    assert isinstance(obj, _Globals)
    return obj


def _load(ctx: typer.Context, config: Path | None) -> Config:
    """The configuration named after the command, else before it, else by $ROTATOR_CONFIG."""
    return load_config(config or _globals(ctx).config)


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
    ctx.obj = _Globals(config=config, log_level=level, log_format=fmt)
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
    from rotator.checks import render_checks, run_checks

    cfg = _load(ctx, config)
    results = asyncio.run(run_checks(cfg, config_only=config_only))
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        typer.echo(render_checks(results))
    raise typer.Exit(EXIT_OK if all(r.ok for r in results) else EXIT_FAILED)


@dev_app.command("standin")
def dev_standin(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free port).", min=0, max=65535)] = 18080,
    admin_key: Annotated[
        str, typer.Option("--admin-key", help="The Admin API key the stand-in accepts.")
    ] = "standin-admin-key",
) -> None:
    """Run the local Mistral stand-in (Admin API + /v1/models) until Ctrl-C."""
    from rotator.mistral.standin import run_standin

    run_standin(host=host, port=port, admin_key=admin_key)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `rotator` console script; maps every failure to an exit status."""
    try:
        code = app(args=argv, prog_name="rotator", standalone_mode=False)
    except ConfigError as exc:
        print(scrub(str(exc)), file=sys.stderr)
        code = EXIT_USAGE
    except NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        code = EXIT_USAGE
    except UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        print(f"rotator: {exc.format_message()}{hint}", file=sys.stderr)
        code = EXIT_USAGE
    except ClickException as exc:
        print(f"rotator: {exc.format_message()}", file=sys.stderr)
        code = EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        print("rotator: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        structlog.get_logger(__name__).exception("internal_error")
        print(f"rotator: internal error: {type(exc).__name__}: {scrub(str(exc))}", file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else EXIT_OK)
