"""``scripts/demo``: rotator running live on its built-in stand-ins, until Ctrl-C or ``--for``.

Start: the Mistral stand-in, an OpenBao dev server and moto (Secrets Manager) on loopback ports;
per target of the demo configuration, a key "made by hand" written to Vault and AWS (the targets
``adopt_existing`` it); ``rotator run`` in the background, its JSON log in ``<dir>/logs``; one
on-demand rotation of the first target through the daemon's API, so the first rotation comes at
once (every target then follows its schedule); and a consumer thread that uses the keys the way
services do (:class:`~rotator_dev.demo.apps.Consumer`).

Shown (:mod:`rotator_dev.demo.view`): one line per rotation event, and every few seconds a status
line from ``/metrics`` and the consumer's count of calls and failures. Fingerprints only, never a
key.

Stop: Ctrl-C (exit 130), SIGTERM (143), SIGHUP (129), or ``--for`` seconds after the first
rotation (exit 0). The consumer stops first, then the daemon gets SIGTERM and finishes any rotation
in flight, then the stand-ins stop; a second Ctrl-C kills what is left at once. One goodbye line
says what happened. A child that fails to start or dies: exit 1 naming its log; an invalid
configuration: exit 2.

Environment (:mod:`rotator_dev.demo.settings`): ``ROTATOR_DEMO_MISTRAL_PORT`` (18080),
``ROTATOR_DEMO_VAULT_PORT`` (18200), ``ROTATOR_DEMO_AWS_PORT`` (18500), ``ROTATOR_DEMO_HTTP_PORT``
(the daemon's, 9402), ``ROTATOR_DEMO_DIR`` (``./var/demo``), ``ROTATOR_DEMO_DURATION`` (seconds,
like ``--for``). The demo writes ``<ROTATOR_DEMO_DIR>/env``: sourced in another shell, the CLI
works against the running demo.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from rotator.config import Config, load_config
from rotator.durations import format_duration
from rotator.errors import ConfigError
from rotator.logs import scrub
from rotator_dev.demo.apps import AppStores, Consumer, LegacyKey, seed_legacy_keys
from rotator_dev.demo.processes import Child, LogTail, StartError, port_in_use, spawn, wait_ready
from rotator_dev.demo.settings import Settings, demo_environment, port_variable, write_env_file
from rotator_dev.demo.view import EventView, clock, line, status_line

STATUS_EVERY = 15.0
"""Seconds between two status lines."""
DAEMON_STOP = 70.0
"""How long the daemon may take to stop (its own drain bound is 60 s)."""
_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
_FAILURES = (
    StartError,
    OSError,
    ValueError,
    TypeError,
    httpx.HTTPError,
    BotoCoreError,
    ClientError,
)
"""What stops the demo with exit 1 and one line: a child that cannot start, a refused call."""


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """A stop was requested while the demo was still starting."""


class Demo:
    """One run of the demo (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.logs = settings.directory / "logs"
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self.signal: int | None = None
        self.children: list[Child] = []
        self.daemon: Child | None = None
        self.consumer: Consumer | None = None
        self.stores: AppStores | None = None
        self.view = EventView()
        self.tail = LogTail(self.logs / "rotator.log")
        self.config = _shown(settings.config)
        self.started = time.monotonic()
        self._print_lock = threading.Lock()

    # -- the whole run ---------------------------------------------------------------------------

    def run(self) -> int:
        for sig in _EXIT:
            signal.signal(sig, self._on_signal)
        code = 0
        try:
            cfg = self._prepare()
            self._start_processes(cfg)
            self._seed(cfg)  # while the daemon starts
            self._wait(lambda: self.view.port is not None, "rotator run to start")
            self._start_consumer(cfg)
            self._first_rotation(cfg)
            code = self._watch(cfg)
        except StopRequested:
            pass
        except ConfigError as exc:
            self.say(f"demo: {exc}", err=True)
            code = 2
        except _FAILURES as exc:
            self.say(f"demo: {exc}", err=True)
            code = 1
        finally:
            self._stop_everything()
        if self.signal is not None:
            code = _EXIT.get(signal.Signals(self.signal), 130)
        self.say(self._goodbye(code))
        return code

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            self.hurry.set()  # a second Ctrl-C: kill what is left at once
            return
        self.signal = signum
        self.stop.set()

    def say(self, text: str, *, err: bool = False) -> None:
        """Print one line (from any thread), scrubbed of anything shaped like a key; a closed
        output (``| head``) stops the demo."""
        with self._print_lock:
            try:
                print(scrub(text), file=sys.stderr if err else sys.stdout, flush=True)
            except OSError:  # BrokenPipeError and the like: nobody is watching any more
                self.stop.set()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise StopRequested

    # -- start -----------------------------------------------------------------------------------

    def _prepare(self) -> Config:
        """The environment the configuration and every child read (also written to the env file
        for another shell); a fresh state; the config."""
        ports = self.settings.ports
        for name, port in ports.items():
            if port_in_use(port):
                raise StartError(
                    f"port {port} is in use: stop what uses it or set {port_variable(name)}"
                )
        variables = demo_environment(self.settings, dict(os.environ))
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            del os.environ[name]  # moto accepts any credentials; never let real ones reach it
        os.environ.update(variables)
        cfg = load_config(self.settings.config)
        # The stand-ins keep everything in memory: the state starts afresh with them.
        self.settings.directory.mkdir(parents=True, exist_ok=True)
        for old in self.settings.directory.glob("state.db*"):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        self.logs.mkdir(exist_ok=True)
        bin_dir = Path(sys.executable).parent
        installed = bin_dir if (bin_dir / "rotator").exists() else None
        write_env_file(self.settings.env_file, variables, bin_dir=installed)
        return cfg

    def _start_processes(self, cfg: Config) -> None:
        """The three stand-ins and, as soon as Mistral's answers, the daemon."""
        ports = self.settings.ports
        env = dict(os.environ)
        home = self.settings.directory / "openbao"  # bao -dev writes ~/.vault-token: not yours
        home.mkdir(exist_ok=True)
        admin = cfg.mistral.admin_key.reveal()  # the stand-in's own, from config/demo.yaml
        mistral = self._spawn(
            "mistral",
            [*_rotator(), "dev", "standin", "--port", str(ports["mistral"]), "--admin-key", admin],
            env,
        )
        vault = self._spawn(
            "openbao",
            [
                shutil.which("bao") or "bao",
                "server",
                "-dev",
                f"-dev-root-token-id={os.environ['ROTATOR_DEMO_VAULT_TOKEN']}",
                f"-dev-listen-address=127.0.0.1:{ports['vault']}",
            ],
            env | {"HOME": str(home)},
        )
        launcher = Path("tests/support/moto_launcher.py")  # moto with AWS's AWSCURRENT reads
        if not launcher.is_file():
            raise StartError(f"{launcher} not found: run scripts/demo from a rotator checkout")
        aws = self._spawn(
            "moto", [sys.executable, str(launcher), "-H", "127.0.0.1", "-p", str(ports["aws"])], env
        )
        wait_ready(mistral, f"{self.settings.url('mistral')}/_standin/clock", cancel=self.stop)
        self._check_stop()
        # Until its first rotation the daemon talks to Mistral only: it starts (a slow import)
        # while OpenBao and moto finish starting.
        self._start_daemon()
        for child, probe in (
            (vault, f"{self.settings.url('vault')}/v1/sys/health"),
            (aws, f"{self.settings.url('aws')}/moto-api/data.json"),
        ):
            wait_ready(child, probe, cancel=self.stop)
            self._check_stop()
        self.say(
            f"demo: Mistral stand-in {self.settings.url('mistral')}, OpenBao"
            f" {self.settings.url('vault')}, moto (AWS Secrets Manager) {self.settings.url('aws')}"
        )
        self.say(f"demo: rotator run -c {self.config} (its JSON log: {_shown(self.tail.path)})")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        child = spawn(name, argv, self.logs / f"{name}.log", env=env)
        self.children.append(child)
        return child

    def _seed(self, cfg: Config) -> list[LegacyKey]:
        self.stores = AppStores(cfg)
        legacy = seed_legacy_keys(cfg, self.stores)
        policies = {t.name: t.policy for t in cfg.targets}
        for key in legacy:
            self.view.fingerprints[key.key_id] = key.fingerprint
            self.view.current[key.target] = key.fingerprint
            policy = policies[key.target]
            text = (
                f"key {key.fingerprint} made before rotator; rotate {policy.schedule},"
                f" grace {format_duration(policy.grace)}"
            )
            self.say(line(clock(), key.target, "existing", text))
        self._check_stop()
        return legacy

    def _start_daemon(self) -> None:
        self.daemon = self._spawn(
            "rotator",
            [*_rotator(), "--log-format", "json", "--log-level", "INFO", "run", "-c", self.config],
            dict(os.environ),
        )

    def _wait(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Print the daemon's events until ``condition()`` holds (StartError after ``timeout``
        seconds or if the daemon exits; StopRequested on a stop)."""
        deadline = time.monotonic() + timeout
        while True:
            self._pump()
            if condition():
                return
            self._check_daemon()
            if time.monotonic() > deadline:
                raise StartError(f"waited {timeout:.0f}s for {what} (log: {self.tail.path})")
            if self.stop.wait(0.1):
                raise StopRequested

    def _start_consumer(self, cfg: Config) -> None:
        assert self.stores is not None
        places = [p for t in cfg.targets for p in self.stores.places(t)]
        self.consumer = Consumer(
            self.stores,
            places,
            cfg.mistral.api_url,
            pause=0.25,
            report=lambda text: self.say(line(clock(), "consumer", "FAILED", text)),
        )
        self.consumer.start()
        self.say(
            "demo: a consumer now reads the keys from Vault and AWS as your services do and"
            " calls GET /v1/models with them"
        )
        self.say(
            "demo: status lines: per target, key age/next rotation in/old keys pending"
            " revocation. Ctrl-C stops everything."
        )
        self.say(
            f"demo: in another shell: source {shlex.quote(_shown(self.settings.env_file))},"
            f" then rotator --config {self.config} status"
        )

    def _first_rotation(self, cfg: Config) -> None:
        """Rotate the first target now, on demand through the daemon's API (the way an operator
        asks for one), and wait for its result: the first rotation need not wait for a schedule.
        Skipped without ``server.admin_token``."""
        token = cfg.server.admin_token
        target = cfg.targets[0].name
        if token is None:
            return
        self._wait(lambda: target in self.view.planned, "the daemon to plan its rotations")
        route = f"/api/v1/targets/{target}/rotate"
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{self.view.port}{route}",
                headers={"Authorization": f"Bearer {token.reveal()}"},
                trust_env=False,
                timeout=10,
            )
            result = f"{answer.status_code} {answer.reason_phrase}"
        except httpx.HTTPError as exc:
            answer, result = None, type(exc).__name__
        self.say(line(clock(), target, "on demand", f"POST {route} -> {result}"))
        if answer is not None and answer.status_code == 202:
            self._wait(lambda: target in self.view.finished, "the first rotation to finish")

    # -- watch -----------------------------------------------------------------------------------

    def _watch(self, cfg: Config) -> int:
        """Print events and status until a stop, the end of the duration (0) or the daemon's
        unexpected exit (1)."""
        duration = self.settings.duration
        deadline = None if duration is None else time.monotonic() + duration
        next_status = time.monotonic() + 3
        while not self.stop.wait(0.2):
            self._pump()
            self._check_daemon()
            now = time.monotonic()
            if now >= next_status:
                self._status(cfg)
                next_status = now + STATUS_EVERY
            if deadline is not None and now >= deadline:
                return 0
        return 0

    def _pump(self) -> None:
        for event in self.tail.events():
            for text in self.view.lines(event):
                self.say(text)

    def _check_daemon(self) -> None:
        if self.daemon is not None and not self.daemon.running():
            why = (
                self.tail.raw[-1] if self.tail.raw else f"exit status {self.daemon.process.poll()}"
            )
            raise StartError(f"rotator run stopped unexpectedly: {why} (log: {self.tail.path})")

    def _status(self, cfg: Config) -> None:
        names = [t.name for t in cfg.targets]
        try:
            metrics = httpx.get(
                f"http://127.0.0.1:{self.view.port}/metrics", trust_env=False, timeout=5
            ).text
            self.say(status_line(metrics, names))
        except httpx.HTTPError as exc:
            self.say(line(clock(), "status", "unknown", f"/metrics: {type(exc).__name__}"))
        if self.consumer is not None:
            calls, failures = self.consumer.calls, self.consumer.failures
            text = f"{calls} calls to GET /v1/models, {_count(failures, 'failure')}"
            self.say(line(clock(), "consumer", "using", text))

    # -- stop ------------------------------------------------------------------------------------

    def _stop_everything(self) -> None:
        """Consumer, daemon (it finishes a rotation in flight), then the stand-ins."""
        if self.signal == signal.SIGINT and sys.stdout.isatty():
            self.say("")  # end the terminal's "^C" line
        if self.consumer is not None:
            self.consumer.stop()
        if self.daemon is not None:
            self.daemon.stop(timeout=DAEMON_STOP, hurry=self.hurry)
            self._pump()
        for child in self.children:
            child.terminate()
        for child in self.children:
            child.stop(timeout=10, hurry=self.hurry)
        if self.stores is not None:
            self.stores.close()

    def _goodbye(self, code: int) -> str:
        why = {0: "time is up", 130: "Ctrl-C", 143: "SIGTERM", 129: "SIGHUP"}.get(code, "failed")
        seconds = round(time.monotonic() - self.started)
        view = self.view
        done = (
            f"{_count(view.rotations, 'rotation')}, {_count(view.revocations, 'old key')} revoked"
        )
        if self.consumer is not None:
            failures = _count(self.consumer.failures, "failure")
            done += f", consumer {_count(self.consumer.calls, 'call')} with {failures}"
        left = [c.name for c in self.children if c.running()]
        stopped = f"still running: {', '.join(left)}" if left else "everything it started stopped"
        logs = f"; logs in {_shown(self.logs)}" if self.children else ""  # none before a start
        return f"demo: stopped ({why}) after {seconds}s: {done}; {stopped}{logs}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _rotator() -> list[str]:
    """The ``rotator`` command of this interpreter."""
    return [sys.executable, "-m", "rotator"]


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    return Demo(Settings.parse(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
