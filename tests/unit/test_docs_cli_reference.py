"""docs/cli.md documents every command and option of the program, and nothing else.

Each command has a section whose heading names it in backticks (``## `rotator rotate` ``); its
options and arguments are the backticked first cells of the section's tables whose header row
starts ``| option |`` (``| `-c`, `--config PATH` | …``, ``| `TARGETS` | …``). The program side
comes from the typer app through ``typer.main.get_command`` (typer vendors click as
``typer._click``); ``-h``/``--help`` is everywhere and documented once.

The conventions' tables are checked too: the ``| status |`` table lists the exit statuses
:func:`rotator.cli.main` returns, and the ``| outcome |`` table every
:class:`~rotator.engine.steps.Outcome`, with exit 0 exactly for the outcomes
``rotator rotate`` accepts as success.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
from typer._click.core import Command

from rotator.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, app
from rotator.engine.steps import Outcome

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
EXIT_INTERRUPTED = 130
SUCCESSFUL = {Outcome.ROTATED, Outcome.PROMOTED, Outcome.PLANNED}
"""What ``rotator rotate`` exits 0 on (docs/cli.md#conventions); every other outcome exits 1."""
_HEADING = re.compile(r"^#{2,3} `(rotator[a-z -]*)`")
_OPTION_HEADER = re.compile(r"^\|\s*option\s*\|")
_FIRST_CELL = re.compile(r"^\|([^|]*)\|")


def program_surface(command: Command, path: str = "rotator") -> dict[str, set[str]]:
    """Command path -> its option names (``--x``, ``-x``) and argument names (upper case).

    A group with subcommands is listed only if it has options of its own (the root does).
    """
    found: dict[str, set[str]] = {}
    names: set[str] = set()
    for param in command.params:
        if param.param_type_name == "argument":
            names.add((param.name or "").upper())
        else:
            names.update(param.opts)
            names.update(param.secondary_opts)
    subcommands: dict[str, Command] = getattr(command, "commands", {})
    if names or not subcommands:
        found[path] = names
    for name, sub in subcommands.items():
        found.update(program_surface(sub, f"{path} {name}"))
    return found


def documented_surface(markdown: str) -> dict[str, set[str]]:
    """Section command path -> the option and argument names in its ``| option |`` tables."""
    found: dict[str, set[str]] = {}
    current: str | None = None
    in_options = False
    for line in markdown.splitlines():
        heading = _HEADING.match(line)
        if heading:
            current = heading.group(1).strip()
            found[current] = set()
            continue
        if line.startswith("#"):
            current = None
            continue
        if not line.startswith("|"):
            in_options = False
            continue
        if _OPTION_HEADER.match(line):
            in_options = True
            continue
        cell = _FIRST_CELL.match(line)
        if current is not None and in_options and cell:
            for code in re.findall(r"`([^`]+)`", cell.group(1)):
                found[current].add(code.split()[0].rstrip("…"))
    return found


def test_every_command_and_option_is_documented_and_no_other() -> None:
    """docs/cli.md has a section per command listing exactly the program's options."""
    program = program_surface(typer.main.get_command(app))
    documented = documented_surface(DOC.read_text(encoding="utf-8"))
    assert set(documented) == set(program)
    for command, names in program.items():
        assert documented[command] == names, command


def test_the_surface_includes_the_subcommands_and_their_options() -> None:
    """The introspection reaches nested commands, arguments and short options."""
    program = program_surface(typer.main.get_command(app))
    assert {"--host", "--port", "--admin-key"} == program["rotator dev standin"]
    assert {"TARGETS", "--all", "-c", "--config"} <= program["rotator rotate"]
    assert "rotator dev" not in program


def test_an_undocumented_option_is_noticed() -> None:
    """A section that misses an option, or names one the program lacks, differs from it."""
    doc = "## `rotator x`\n\n| option | meaning |\n| --- | --- |\n| `--a N` | a |\n"
    assert documented_surface(doc) == {"rotator x": {"--a"}}
    assert documented_surface(doc + "| `-b`, `--bee` | b |\n") == {
        "rotator x": {"--a", "-b", "--bee"}
    }


def first_table(markdown: str, header: str) -> dict[str, list[str]]:
    """Backticked first cell -> the other cells, for the first table whose header starts
    ``| header |``."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in markdown.splitlines():
        if re.match(rf"^\|\s*{header}\s*\|", line):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([^`]+)`", cells[0]) if inside else None
        if name:
            rows[name.group(1)] = cells[1:]
    return rows


def test_the_exit_statuses_are_the_programs() -> None:
    """The exit status table lists exactly 0, 1, 2 and 130."""
    statuses = first_table(DOC.read_text(encoding="utf-8"), "status")
    assert set(statuses) == {str(c) for c in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED)}


def test_every_outcome_is_documented_with_its_exit_status() -> None:
    """The outcome table lists every Outcome, exit 0 for the successful ones and 1 otherwise."""
    outcomes = first_table(DOC.read_text(encoding="utf-8"), "outcome")
    assert set(outcomes) == {str(o) for o in Outcome}
    for outcome, cells in outcomes.items():
        wanted = EXIT_OK if Outcome(outcome) in SUCCESSFUL else EXIT_FAILED
        assert cells[-1] == str(wanted), outcome
