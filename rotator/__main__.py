"""The ``rotator`` command's entry point: the console script and ``python -m rotator``.

``rotator --version`` is answered here from the standard library alone (about 0.03 s); every
other command line goes to :func:`rotator.cli.main`, which imports what its command needs.
``tests/unit/test_cli_imports.py`` checks the modules ``--version`` and ``status`` leave out.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); always exits (``SystemExit``)
    with the status :func:`rotator.cli.main` documents."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from rotator import __version__

        print(f"rotator {__version__}")
        sys.exit(0)
    _leave_out_unused_extras()
    from rotator.cli import main as cli_main

    cli_main(args)


def _leave_out_unused_extras() -> None:
    """Keep two libraries from loading optional extras rotator never uses.

    - structlog loads rich at import (and through it pygments and attrs: 70 modules, 4 MB and
      40 ms per process) for its rich console tracebacks and ``repr`` of locals; rotator uses
      neither (:mod:`rotator.logs`: plain tracebacks, ``show_locals=False``). structlog is
      imported here as if rich were absent; rich stays importable for what asks for it later
      (typer's ``--help``).
    - httpx imports its command-line client (``httpx._main``: click, rich, pygments) when they
      are installed, as they are here; it is marked absent, so httpx keeps its stub ``main``
      (3 MB and 50 ms less in the daemon).

    Nothing is changed for a module imported already."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


if __name__ == "__main__":
    main()
