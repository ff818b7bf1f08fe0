"""The ``rotator`` command's entry point: the console script and ``python -m rotator``.

``rotator --version`` is answered here from the standard library alone (about 0.03 s); every
other command line goes to :func:`rotator.cli.main`, which imports what its command needs.
``tests/unit/test_cli_imports.py`` checks the modules ``--version`` leaves unimported.
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
    from rotator.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
