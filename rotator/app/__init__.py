"""The composition root: builds the engine from a configuration and the concrete backends.

The faces (``cli``, ``daemon``) call :func:`rotator.app.wiring.build_engine`; nothing below
imports this package."""
