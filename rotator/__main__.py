"""`python -m rotator` runs the CLI."""

from __future__ import annotations

from rotator.cli import main

main()
