"""The campaign's figures: counted from the state database and the stand-in at the end, rendered
as a terminal table, ``chaos.json`` and a Markdown fragment (``chaos.md``) for RESULTS.md."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from world import RESULTS, table

from rotator.clock import SystemClock
from rotator.state import SqlStateStore
from rotator_dev.standin import KeyFacts

INTERRUPTED = "undone by recovery"
"""How a rotation rolled back by recovery (its process died) says so in its error."""


def state_figures(state_url: str, recovered_ids: set[str], facts: list[KeyFacts]) -> dict[str, Any]:
    """Rotations by outcome, rollbacks by cause, recoveries by result, revocations, keys."""

    async def read() -> tuple[list[Any], Counter[str]]:
        store = SqlStateStore(state_url, clock=SystemClock())
        try:
            rotations = await store.list_rotations(limit=1_000_000)
            audit = Counter(e.event for e in await store.audit_events())
        finally:
            await store.close()
        return rotations, audit

    rotations, audit = asyncio.run(read())
    outcomes = Counter(r.outcome or f"open ({r.state})" for r in rotations)
    rolled = [r for r in rotations if r.outcome == "rolled_back"]
    undone = sum(1 for r in rolled if "interrupted" in (r.error or ""))
    by_id = {r.rotation_id: r for r in rotations}
    recovered = Counter(
        (by_id[i].outcome or "open") if i in by_id else "unknown" for i in recovered_ids
    )
    issued = [k for k in facts if (k.name or "").startswith("rotator-")]
    return {
        "rotations started": len(rotations),
        "rotations completed (new key served everywhere)": outcomes["promoted"]
        + outcomes["rotated"],
        "rollbacks": len(rolled),
        "rollbacks of rotations cut by a kill (by recovery)": undone,
        "rollbacks on a fault (before any consumer saw the key)": len(rolled) - undone,
        "rotations left open": sum(1 for r in rotations if r.finished_at is None),
        "recoveries (rotations resumed after a crash)": len(recovered_ids),
        "recoveries finished forward (promoted)": recovered["promoted"] + recovered["rotated"],
        "recoveries undone (rolled back)": recovered["rolled_back"],
        "revocations (old keys deleted after grace)": audit["key.revoked"],
        "orphan keys deleted by recovery": audit["key.orphan_deleted"],
        "keys issued by rotator": len(issued),
        "keys issued by rotator still alive": sum(1 for k in issued if not k.deleted),
    }


def render_table(rows: list[tuple[str, object]]) -> str:
    """A two-column terminal table."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def headline(results: dict[str, Any]) -> list[tuple[str, object]]:
    """The figures the issue asks for, in order."""
    kills = results["kills"]
    state = results["state"]
    consumers = results["consumers"]
    invariants = results["invariants"]
    restarts = results["restarts"]
    return [
        ("duration", f"{results['duration_s'] / 60:.1f} min"),
        ("targets (each: 1 Vault + 1 AWS destination)", results["parameters"]["targets"]),
        ("SIGKILLs of rotator run", kills["total"]),
        ("  during the start's recovery", kills.get("during the start's recovery", 0)),
        ("  rotations in flight cut by a kill", kills["rotations cut"]),
        ("OpenBao restarts", restarts.get("openbao", 0)),
        ("AWS endpoint outages (moto kept running)", restarts.get("aws endpoint", 0)),
        ("Mistral faults injected", sum(results["faults"].values())),
        ("rotations completed", state["rotations completed (new key served everywhere)"]),
        ("rollbacks", state["rollbacks"]),
        (
            "recoveries (rotations resumed after a crash)",
            state["recoveries (rotations resumed after a crash)"],
        ),
        ("revocations", state["revocations (old keys deleted after grace)"]),
        ("invariant checks (I1-I6)", invariants["checks"]),
        ("invariant violations", len(invariants["violations"])),
        ("consumer calls", consumers.get("calls", 0)),
        ("consumer failures (401 within grace)", consumers.get("failures", 0)),
        (
            "consumer reads refused by an outage (not failures)",
            consumers.get("vault read unavailable", 0) + consumers.get("aws read unavailable", 0),
        ),
        (
            "consumer calls answered 5xx/timeout by injected faults",
            consumers.get("/v1/models unavailable (injected fault)", 0),
        ),
        (
            "consumer calls refused after an outage outlasted grace",
            consumers.get("stale refused (held past grace: refresh failed in an outage)", 0),
        ),
    ]


def markdown(results: dict[str, Any]) -> str:
    """The fragment ``bench/results.py`` puts into RESULTS.md."""
    params = results["parameters"]
    machine = results["machine"]
    load = results["load"]
    lines = [
        "### Resilience campaign",
        "",
        (
            f"`python bench/chaos.py --kills {params['kills']} --minutes {params['minutes']:g}"
            f" --targets {params['targets']} --seed {params['seed']}` on {machine['cpus']} CPUs"
            f" ({machine['date']}, commit {machine['commit']}); load average (1 min) during the"
            f" run: mean {load['mean']}, max {load['max']} — other helpers' tests shared the cores."
        ),
        "",
        table(["measure", "value"], headline(results)),
        "",
        (
            f"Schedule every {params['every']:g} s, grace {params['grace']:g} s (consumers refresh"
            f" every {params['refresh']:g} s), {params['drained']} of {params['targets']} targets"
            f" drain (max_grace {params['max_grace']:g} s), concurrency {params['concurrency']}."
            " Each kill is a SIGKILL at a random moment: "
            f"{params['kill_after'][0]:g}-{params['kill_after'][1]:g} s after the start's"
            f" recovery, or ({params['early_share']:.0%} of them) 0-0.6 s into the recovery;"
            " the next `rotator run` starts at once and recovers. OpenBao or the AWS endpoint"
            f" restarts every {params['restart_every'][0]:g}-{params['restart_every'][1]:g} s."
            " After each start the campaign asks the daemon's API, as an operator would, to"
            " rotate every target it lists as failing or stuck (without that, a failed target"
            " waits for its 1 h backoff and rotations would stall at this speed)."
        ),
        "",
        "What was restarted and how:",
        "",
        "- **rotator**: `rotator run` as a real process, SIGKILLed and started again each time.",
        (
            "- **OpenBao**: a real restart of `bao server -config` with raft storage (initialised"
            " once; SIGTERM or SIGKILL at random, down 0.5-3 s, started and unsealed again; every"
            " secret and token kept)."
        ),
        (
            "- **moto**: moto keeps its state in memory only, so the moto process stays up; rotator"
            " and the consumers reach it through a proxy (tests/support/faultproxy.py) and a"
            ' "restart" is an outage of that endpoint: for 0.3 s requests are carried out and their'
            " answers lost, then for 0.5-3 s every request is cut unanswered, then service resumes."
        ),
        "- **Mistral stand-in**: never restarted (it is Mistral); faults injected through its"
        " control API, one at a time on one operation for 0.5-3 s, then cleared: "
        + ", ".join(f"{kind} {n}" for kind, n in sorted(results["faults"].items()))
        + ".",
        "",
        (
            "Invariants were checked after every restart, once its recovery had run, while the"
            " daemon went on rotating (a race-safe ordering of reads, tests/support/"
            "live_invariants.py), and at the end after `rotator recover` and `rotator revoke-due`"
            " with every fault cleared (no open rotation, no AWSPENDING, each target's destinations"
            " all serving its current key, no other managed key alive)."
        ),
        "",
        f"Consumers: {consumers_line(results['consumers'])}.",
        "",
        (
            f"Final: `rotator recover` exit {results['final']['recover exit']},"
            f" `rotator revoke-due` exit {results['final']['revoke-due exit']},"
            f" `rotator history --verify` exit {results['final']['audit verify exit']};"
            f" violations at rest: {len(results['final']['violations'])}."
        ),
        "",
        "Error-level events the daemons logged: "
        + (
            ", ".join(
                f"{name} {n}" for name, n in sorted(results["daemon"]["error events"].items())
            )
            or "none"
        )
        + ". `old_key_in_use_at_max_grace` is expected (draining targets' keys stay in use);"
        " `rotation_stuck` comes with outages (a destination unreadable after a promotion).",
    ]
    findings = results.get("findings", [])
    if findings:
        lines += ["", "Findings:", ""] + [f"- {line}" for line in findings]
    violations = results["invariants"]["violations"]
    if violations:
        lines += ["", "Violations:", ""] + [f"- `{v}`" for v in violations[:20]]
    return "\n".join(lines) + "\n"


def consumers_line(consumers: dict[str, Any]) -> str:
    return ", ".join(f"{name} {n}" for name, n in consumers.items() if isinstance(n, int))


def main(argv: list[str]) -> None:
    """``python bench/chaos_report.py [bench/results/chaos.json]``: render ``chaos.md`` again
    from the JSON (after a change of wording)."""
    source = Path(argv[0]) if argv else RESULTS / "chaos.json"
    (source.parent / "chaos.md").write_text(markdown(json.loads(source.read_text())))


def write(results: dict[str, Any], out: Path) -> None:
    """``chaos.json`` and ``chaos.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "chaos.md").write_text(markdown(results))


if __name__ == "__main__":
    main(sys.argv[1:])
