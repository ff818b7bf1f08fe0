"""Which ``StateStore`` calls are durable writes, and which journal steps each one carries.

The engine journals several steps per transaction (``append_steps``, and the ``steps`` of
``start_rotation``, ``record_promotion`` and ``finish_rotation``), so a test that acts "at a
journal step" or "at every journal boundary" looks at every write and the step names in it:
the crash proxies (:mod:`tests.support.crash_seam`, :class:`tests.support.engine_fakes
.StepHookStore`), the fault matrix's hooks and the budget test's counts share these rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

READS = frozenset(
    {
        "get_target",
        "list_targets",
        "probe",
        "revocations_due",
        "get_rotation",
        "open_rotations",
        "list_rotations",
        "journal",
        "audit_events",
        "verify_audit",
        "audit_head",
    }
)
"""StateStore methods that only read."""
NOT_TRANSACTIONS = frozenset({"try_lock_target", "unlock_target", "close"})
"""A file or advisory lock taken or released, the connections closed: no transaction."""
WRITE = "write"
"""The name under which :mod:`tests.support.crash_seam` counts every write, whatever its method."""


def is_write(method: str) -> bool:
    """Whether calling ``method`` of a StateStore is a durable (writing) transaction."""
    return method not in READS | NOT_TRANSACTIONS and not method.startswith("_")


def steps_of(method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[str]:
    """The journal step names a write carries (``append_step(rid, step, …)``,
    ``append_steps(rid, steps, …)``, or ``steps=`` of the others); for a write without any,
    its method name, so that every write has a name to be told by."""
    if method == "append_step":
        names = [args[1] if len(args) > 1 else kwargs["step"]]
    elif method == "append_steps":
        names = [name for name, _ in (args[1] if len(args) > 1 else kwargs["steps"])]
    else:
        names = [name for name, _ in kwargs.get("steps", ())]
    return [str(name) for name in names] or [method]
