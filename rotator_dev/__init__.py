"""rotator's dev kit: the Mistral stand-in, the live demo and the in-memory destination.

For laptops and tests only, never for production: it is not in the wheel nor the container image
(``pyproject.toml`` packages ``rotator`` alone; ``.dockerignore`` copies ``rotator/`` alone).
From a checkout, ``scripts/venv.sh`` makes it importable in ``.venv``.

- :mod:`rotator_dev.standin` — a local stand-in for Mistral's Admin API (``rotator dev standin``)
- :mod:`rotator_dev.demo` — the live local demo (``scripts/demo``, ``python -m rotator_dev.demo``)
- :mod:`rotator_dev.memory` — the in-memory reference destination, for unit and contract tests

It may import ``rotator``; ``rotator`` never imports it (but for the lazy import behind
``rotator dev standin``).
"""
