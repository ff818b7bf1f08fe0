"""The resilience campaign: SIGKILL ``rotator run`` again and again while it rotates, with faults.

A real ``rotator run`` rotates ``--targets`` targets (each with a Vault and an AWS destination)
every few seconds with a short grace, so rotations and revocations never stop. Each cycle starts
the daemon (it recovers on start), waits until its recovery ran (or, for a share of the cycles,
not even that), and SIGKILLs it at a random moment; meanwhile the stand-in gets random faults,
OpenBao is restarted and the AWS endpoint goes down now and then, and consumer threads use the
keys the way applications do (:mod:`chaos_actors`). After every restart the race-safe checker
(:mod:`tests.support.live_invariants`) verifies I1-I6 while the daemon runs; at the end, with
every fault cleared, ``rotator recover`` and ``rotator revoke-due`` run and the world must be at
rest: no open rotation, no AWSPENDING, one live managed key per target served everywhere.

Bounded: at most ``--kills`` kills within ``--minutes`` minutes. Results: a table on stdout,
``<out>/chaos.json`` and ``<out>/chaos.md`` (default ``bench/results``). Exit status 1 when an
invariant was violated or a consumer failed.

Usage: ``python bench/chaos.py [--kills 200] [--minutes 20] [--targets 20] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chaos_actors import Consumers, ConsumerTiming, MistralFaults, Restarts, Stoppable
from chaos_daemon import DaemonProcess, DaemonTally, api_calls, is_recovered
from chaos_report import headline, render_table, state_figures, write
from chaos_world import ADMIN_TOKEN, Policy, World
from world import RESULTS, machine

from tests.support.live_invariants import LiveChecker, Report, UnavailableError

RECOVERY_GUARD = 45.0
"""Seconds a start may take to recover before it is killed anyway (counted)."""
DB_SCAN_EVERY = 10
"""Cycles between two full I4 scans of the state database."""


@dataclass(frozen=True)
class Plan:
    """The campaign's bounds and randomness."""

    kills: int
    minutes: float
    targets: int
    seed: int
    early_share: float = 0.15
    """Share of kills landing at a random moment of the start, recovery included."""
    kill_after: tuple[float, float] = (0.2, 4.0)
    restart_every: tuple[float, float] = (30.0, 60.0)
    policy: Policy = field(default_factory=Policy)
    timing: ConsumerTiming = field(default_factory=ConsumerTiming)


class LoadSampler(Stoppable):
    """The 1-minute load average every 5 s (other work shares the cores)."""

    def __init__(self) -> None:
        super().__init__("load sampler")
        self.samples: list[float] = []

    def run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self.stopping.wait(5):
                return

    def summary(self) -> dict[str, float]:
        samples = self.samples or [os.getloadavg()[0]]
        return {"mean": round(sum(samples) / len(samples), 2), "max": round(max(samples), 2)}


class Campaign:
    """One campaign on one world (see the module docstring)."""

    def __init__(self, world: World, plan: Plan) -> None:
        self.world = world
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.checker = LiveChecker(world.stack, world.state_url)
        self.logs = world.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.daemons = DaemonTally()
        self.report = Report()
        self.checks = 0
        self.kills: Counter[str] = Counter()
        self.cut_at: Counter[str] = Counter()
        self.api: Counter[str] = Counter()
        self.log_files: list[Path] = []
        self.checking: threading.Thread | None = None
        self.check_times: list[float] = []
        self.lock = threading.Lock()
        self.start_times: list[float] = []
        """Seconds from each start to the end of its recovery."""

    def run(self) -> dict[str, Any]:
        world, plan = self.world, self.plan
        consumers = Consumers(world, plan.timing)
        faults = MistralFaults(world, rng=random.Random(self.rng.random()))
        restarts = Restarts(world, rng=random.Random(self.rng.random()), every=plan.restart_every)
        load = LoadSampler()
        started = time.monotonic()
        deadline = started + plan.minutes * 60
        for actor in (load, faults, restarts):
            actor.start()
        consumers.start()
        try:
            for cycle in range(plan.kills):
                if time.monotonic() > deadline:
                    break
                self.cycle(cycle)
                print(
                    f"\rkills {self.kills['total']}  violations {len(self.report.violations)}"
                    f"  consumer failures {consumers.tally.counts['failures']}",
                    end="",
                    flush=True,
                )
            self.wait_check()
            print()
            faults.stop()
            restarts.stop()
            final = self.final()
        finally:
            for actor in (faults, restarts, load):
                actor.stopping.set()
            consumers.stop()
            load.stop()
        return self.results(
            duration=time.monotonic() - started,
            load=load.summary(),
            consumers=consumers.tally.snapshot() | {"failure lines": consumers.tally.lines},
            faults=faults.tally,
            restarts=restarts,
            final=final,
        )

    # -- one cycle -------------------------------------------------------------------------------

    def cycle(self, n: int) -> None:
        """Start a daemon, let it recover (or not), SIGKILL it at a random moment; check."""
        log = self.logs / f"run-{n:04d}.log"
        self.log_files.append(log)
        daemon = DaemonProcess(
            self.world.rotator("--log-level", "INFO", "run"),
            env=self.world.rotator_env(),
            log=log,
        )
        try:
            self.live_cycle(daemon)
        finally:  # whatever happens, no daemon outlives its cycle
            daemon.kill()
            daemon.reap()
        if daemon.killed_at is None:
            self.kills[f"daemon exited by itself (status {daemon.exit_code})"] += 1
        self.daemons.add(daemon)
        recovered = any(is_recovered(e) for e in daemon.events)
        self.kills["total"] += 1
        self.kills["while running" if recovered else "during the start's recovery"] += 1
        self.add_violations(self.checker.leaks.scan_files([log]))
        if n % DB_SCAN_EVERY == 0:
            self.add_violations(self.checker.leaks.scan_files(self.db_files(), whole=True))
        self.count_cut()

    def live_cycle(self, daemon: DaemonProcess) -> None:
        """Wait for the moment to kill, arm the kill, check while the daemon runs, kill."""
        spawned = time.monotonic()
        if self.rng.random() < self.plan.early_share:
            # Into the start's recovery: it begins as leadership is gained.
            daemon.wait_for(lambda e: e.get("event") == "leadership_gained", RECOVERY_GUARD)
            timer = threading.Timer(self.rng.uniform(0.0, 0.6), daemon.kill)
            timer.start()
        else:
            if daemon.wait_for(is_recovered, RECOVERY_GUARD) is None:
                self.kills["recovery not reached in time (killed anyway)"] += 1
            else:
                self.start_times.append(time.monotonic() - spawned)
            timer = threading.Timer(self.rng.uniform(*self.plan.kill_after), daemon.kill)
            timer.start()
            if daemon.url is not None:
                answers, texts = api_calls(daemon.url, ADMIN_TOKEN, self.rng)
                self.api.update(answers)
                for where, text in texts:
                    self.add_violations(self.checker.leaks.scan(where, text.encode()))
        self.start_check()
        timer.join()

    def start_check(self) -> None:
        """Check I1-I6 on a thread of its own, once the previous check ended: a check may go on
        while the next daemon starts (it is safe at any instant), never two at once."""
        self.wait_check()
        self.checking = threading.Thread(target=self.check, name="check", daemon=True)
        self.checking.start()

    def wait_check(self) -> None:
        if self.checking is not None:
            self.checking.join()
            self.checking = None

    def check(self) -> None:
        began = time.monotonic()
        try:
            found = self.checker.check()
        except Exception as exc:  # noqa: BLE001 - reported, never silent
            found = Report(violations=[f"checker failed: {type(exc).__name__}: {exc}"])
        with self.lock:
            self.checks += 1
            self.check_times.append(time.monotonic() - began)
            self.report.add(found)
        for line in found.violations:
            print(f"\nVIOLATION: {line}", flush=True)

    def add_violations(self, lines: list[str]) -> None:
        with self.lock:
            self.report.violations += lines

    def count_cut(self) -> None:
        """Rotations the kill left open, by the step they had reached."""
        try:
            open_rotations = [r.state for r in self.checker.read_state().open]
        except UnavailableError:
            self.kills["state unreadable after a kill"] += 1
            return
        self.kills["rotations cut"] += len(open_rotations)
        self.cut_at.update(open_rotations)

    def db_files(self) -> list[Path]:
        base = Path(self.world.state_url.removeprefix("sqlite:///"))
        return [base, Path(f"{base}-wal")]

    # -- the end ---------------------------------------------------------------------------------

    def final(self) -> dict[str, Any]:
        """Faults cleared: recover, wait past every grace, revoke-due, check the world at rest."""
        world = self.world
        world.control.clear_faults()
        world.aws_endpoint.clear()
        if not world.openbao.running:
            world.openbao.start()
        recover = self.command("recover")
        time.sleep(self.settle_time())
        revoke = self.command("revoke-due")
        with ThreadPoolExecutor(max_workers=1) as aside:
            audit_verified = aside.submit(self.command, "history", "--verify")
            at_rest = self.checker.check_quiescent()
            audit = audit_verified.result()
        self.checks += 1
        leaks = self.checker.leaks.scan_files(self.log_files + self.db_files(), whole=True)
        at_rest.violations += leaks
        self.report.add(at_rest)
        return {
            "recover exit": recover,
            "revoke-due exit": revoke,
            "audit verify exit": audit,
            "violations": at_rest.violations,
        }

    def settle_time(self) -> float:
        """Seconds until every retiring key may be revoked: its deadline, and for a draining
        target (its keys are in use) also ``max_grace`` after its replacement."""
        state = self.checker.read_state()
        finished = {r.rotation_id: r.finished_at for r in state.rotations}
        max_grace = timedelta(seconds=self.plan.policy.max_grace)
        deadlines = []
        for target in state.targets.values():
            for key in target.retiring:
                replaced = finished.get(key.rotation_id or "")
                if target.target in self.world.drained and replaced is not None:
                    deadlines.append(max(key.revoke_due_at, replaced + max_grace))
                else:
                    deadlines.append(key.revoke_due_at)
        latest = max(deadlines, default=datetime.now(UTC))
        return max(0.0, (latest - datetime.now(UTC)).total_seconds()) + 0.5

    def command(self, *args: str) -> int:
        """A one-shot rotator command on the world; its exit status (output kept for I4)."""
        log = self.logs / f"{args[0]}.log"
        self.log_files.append(log)
        with log.open("wb") as out:
            done = subprocess.run(
                self.world.rotator(*args),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.world.rotator_env(),
                timeout=300,
                check=False,
            )
        return done.returncode

    def results(
        self,
        *,
        duration: float,
        load: dict[str, float],
        consumers: dict[str, Any],
        faults: Any,
        restarts: Restarts,
        final: dict[str, Any],
    ) -> dict[str, Any]:
        plan, policy = self.plan, self.plan.policy
        return {
            "machine": machine(),
            "load": load,
            "parameters": {
                "kills": plan.kills,
                "minutes": plan.minutes,
                "targets": plan.targets,
                "seed": plan.seed,
                "every": policy.every,
                "grace": policy.grace,
                "max_grace": policy.max_grace,
                "drained": round(plan.targets * policy.drain_share),
                "concurrency": policy.concurrency,
                "refresh": plan.timing.refresh,
                "kill_after": list(plan.kill_after),
                "early_share": plan.early_share,
                "restart_every": list(plan.restart_every),
            },
            "duration_s": round(duration, 1),
            "kills": dict(self.kills)
            | {
                "cut at step": dict(self.cut_at),
                "start to recovered s (mean, max)": _mean_max(self.start_times),
                "check s (mean, max)": _mean_max(self.check_times),
            },
            "daemon": {
                "rotator CPU s (all runs)": round(self.daemons.cpu_s, 1),
                "logged": dict(sorted(self.daemons.counts.items())),
                "error events": dict(self.daemons.errors),
                "api": dict(self.api),
            },
            "restarts": {
                "openbao": sum(
                    n for k, n in restarts.tally.counts.items() if k.startswith("openbao restarts")
                ),
                "aws endpoint": restarts.tally.counts["aws endpoint outages"],
                "detail": restarts.tally.snapshot(),
                "downtime s": dict(restarts.downtime),
            },
            "faults": {
                k: n
                for k, n in faults.snapshot().items()
                if " on " not in k and k != "inject failed"
            },
            "faults by operation": {k: n for k, n in faults.snapshot().items() if " on " in k},
            "state": state_figures(
                self.world.state_url, self.daemons.recovered_ids, self.world.control.key_facts()
            ),
            "consumers": consumers,
            "invariants": {
                "checks": self.checks,
                "facts checked": dict(self.report.checked),
                "inconclusive": dict(self.report.inconclusive),
                "violations": self.report.violations,
            },
            "final": final,
        }


def _mean_max(values: list[float]) -> list[float]:
    return [round(sum(values) / len(values), 2), round(max(values), 2)] if values else []


def parse(argv: list[str] | None = None) -> tuple[Plan, Path, Path | None]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--kills", type=int, default=200, help="SIGKILLs at most (200)")
    add("--minutes", type=float, default=20.0, help="time bound of the kills (20)")
    add("--targets", type=int, default=20, help="targets (20)")
    add("--seed", type=int, default=7, help="random seed (7)")
    add("--every", type=float, default=2.0, help="rotation schedule, seconds (2)")
    add("--grace", type=float, default=5.0, help="grace, seconds (5)")
    add("--max-grace", type=float, default=12.0, help="max_grace of draining targets (12)")
    add("--drain-share", type=float, default=0.25, help="share of targets that drain (0.25)")
    for name, default, what in (
        ("--kill-after", (0.2, 4.0), "seconds between a start's recovery and its SIGKILL"),
        ("--restart-every", (30.0, 60.0), "seconds between two OpenBao or AWS endpoint restarts"),
    ):
        low, high = default
        add(
            name,
            type=float,
            nargs=2,
            default=default,
            metavar=("MIN", "MAX"),
            help=f"{what} ({low:g} {high:g})",
        )
    add("--out", type=Path, default=RESULTS, help="results directory (bench/results)")
    add("--workdir", type=Path, help="keep the servers' files and logs here")
    args = parser.parse_args(argv)
    policy = Policy(
        every=args.every,
        grace=args.grace,
        max_grace=args.max_grace,
        drain_share=args.drain_share,
    )
    plan = Plan(
        kills=args.kills,
        minutes=args.minutes,
        targets=args.targets,
        seed=args.seed,
        kill_after=(args.kill_after[0], args.kill_after[1]),
        restart_every=(args.restart_every[0], args.restart_every[1]),
        policy=policy,
        timing=ConsumerTiming(refresh=min(2.0, args.grace), grace=args.grace),
    )
    return plan, args.out, args.workdir


def _interrupted(signum: int, _frame: object) -> None:
    """SIGTERM or SIGINT (even when started in the background, where SIGINT is ignored): stop
    cleanly, so that no daemon or server outlives the campaign."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    plan, out, workdir = parse(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupted)
    with tempfile.TemporaryDirectory(prefix="rotator-chaos-") as scratch:
        root = workdir or Path(scratch)
        with World.running(root, targets=plan.targets, policy=plan.policy) as world:
            results = Campaign(world, plan).run()
    write(results, out)
    print(render_table(headline(results)))
    print(f"results: {out / 'chaos.json'}, {out / 'chaos.md'}")
    bad = results["invariants"]["violations"] or results["consumers"].get("failures", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
