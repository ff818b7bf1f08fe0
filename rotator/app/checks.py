"""``rotator check`` for stores and destinations: each one authenticates, reads and may write.

Every destination of every target is built through the registry (one connection per store) and
asked :meth:`rotator.contracts.Destination.check_access`; each of its verdicts becomes one line.
Nothing is changed (AWS's write probes are write calls that AWS refuses; see
:mod:`rotator.checks`). A store no destination uses is reported as not checked.
"""

from __future__ import annotations

from rotator.clock import Clock, SystemClock
from rotator.config import Config
from rotator.contracts import CheckResult, OnCall
from rotator.destinations.registry import StoreConnections, build_destination
from rotator.errors import RotatorError
from rotator.pool import BlockingPool


async def check_destinations(
    cfg: Config,
    *,
    pool: BlockingPool | None = None,
    clock: Clock | None = None,
    on_call: OnCall | None = None,
) -> list[CheckResult]:
    """One line per check of every destination of every target; never raises for a backend.
    ``on_call`` hears every backend call the checks make, as in :func:`build_destination`."""
    own_pool = pool is None
    pool = pool or BlockingPool()
    connections = StoreConnections()
    results: list[CheckResult] = []
    used: set[str] = set()
    try:
        for target in cfg.targets:
            for dest_cfg in target.destinations:
                used.add(dest_cfg.store)
                subject = f"target {target.name}"
                try:
                    dest = build_destination(
                        cfg.stores[dest_cfg.store],
                        dest_cfg,
                        pool=pool,
                        clock=clock or SystemClock(),
                        connections=connections,
                        on_call=on_call,
                    )
                    checks = await dest.check_access()
                except RotatorError as exc:
                    results.append(CheckResult(f"{subject} {dest_cfg.store}", False, str(exc)))
                    continue
                results += [
                    CheckResult(f"{subject} {c.destination}", c.ok, f"{c.check}: {c.detail}")
                    for c in checks
                ]
    finally:
        if own_pool:
            pool.shutdown(wait=False)
    results += [
        CheckResult(f"store {name}", True, "not used by any destination; not checked")
        for name in sorted(set(cfg.stores) - used)
    ]
    return results
