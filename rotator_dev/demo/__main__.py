"""``python -m rotator_dev.demo`` (what ``scripts/demo`` runs); see :mod:`rotator_dev.demo.live`."""

from __future__ import annotations

from rotator_dev.demo.live import main

raise SystemExit(main())
