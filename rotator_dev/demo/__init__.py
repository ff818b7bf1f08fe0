"""Developer tools: the local demo (``scripts/demo``, ``python -m rotator_dev.demo``).

``live.py`` runs it; ``settings.py`` reads its options, ``processes.py`` starts and stops the
stand-ins and the daemon, ``apps.py`` plays the keys' consumer, ``view.py`` prints what happens.
Never imported by the daemon or the CLI; nothing here is meant for production.
"""
