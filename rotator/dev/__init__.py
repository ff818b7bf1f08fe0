"""Developer tools: the local demo (``scripts/demo``, ``python -m rotator.dev.demo``).

Never imported by the daemon or the CLI; nothing here is meant for production.
"""
