"""The state store as it was on SQLAlchemy (schema v1 to v4), frozen for the tests.

The stdlib store (:mod:`rotator.state`) must open and upgrade every database this code wrote, at
any schema version, and keep every row: the contract suite writes old databases with it
(``migrate(engine, now=…, upto=N)`` then rows through the engine, or a whole scripted run through
``LegacyStateStore``), and uses its engine and table classes to do what the API cannot
(tampering with rows, inspecting the schema). Frozen as of issue 14: never change what it
writes. It needs the ``sqlalchemy`` package, a test dependency only.
"""

from __future__ import annotations

from tests.support.legacy_state.store import SqlStateStore as LegacyStateStore

__all__ = ["LegacyStateStore"]
