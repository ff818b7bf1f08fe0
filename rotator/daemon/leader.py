"""Leadership: which of several ``rotator run`` instances rotates.

One leader rotates and revokes; standbys serve health and metrics and keep trying to take over.
:func:`build_elector` picks the mechanism from ``leader.election``:

- ``none`` (:class:`SoleElector`): always the leader. One instance (SQLite state), or a
  Deployment with ``strategy: Recreate``.
- ``postgres`` (:class:`PostgresElector`): a session advisory lock held on a dedicated direct
  connection for the process lifetime; losing the connection loses the lock.
- ``kubernetes`` (:class:`KubernetesLeaseElector`): a ``coordination.k8s.io/v1`` Lease, renewed
  with resourceVersion compare-and-swap (cert-manager's 60 s lease / 40 s renew deadline / 15 s
  retry by default).
- ``auto``: ``postgres`` when the state is PostgreSQL, else ``none``.

A lease is not a fence: a leader paused for longer than its lease may act late, after another
instance took over. What keeps that safe is compare-and-swap on every write (Vault ``cas``, AWS
``RemoveFromVersionId`` and ``ClientRequestToken``, one open rotation per target in the state
store), not this module. Leadership only keeps two instances from doing the same work.

How the daemon uses an :class:`Elector`::

    elector = build_elector(cfg, health)
    task = asyncio.create_task(elector.run(on_change=metrics.leader))  # raises LeadershipLost
    ...
    await elector.ensure()   # before each step of a rotation or revocation: raises if lost
    ...
    await elector.release()  # on shutdown, so a standby takes over at once
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import structlog

from rotator.clock import Clock, SystemClock
from rotator.config import Config
from rotator.daemon.control import Health
from rotator.errors import ConfigError, LeadershipLost

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger(__name__)

OnChange = Callable[[bool], None]
"""Called with the new value on every transition (feeds ``rotator_leader`` and its counter)."""

MIGRATION_LOCK_KEY = 0x726F7461746F72
"""The advisory lock migrations take (``rotator.state.migrations``); the leader's differs."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds: how long a lease is valid, how long a leader may fail to renew before it steps
    down, and how often standbys retry and leaders renew."""

    lease_duration: float = 60.0
    renew_deadline: float = 40.0
    retry_period: float = 15.0


def api_timeout(timing: Timing) -> float:
    """Seconds each Kubernetes API request may take: half the renew deadline, 1 to 10 s."""
    return max(1.0, min(10.0, timing.renew_deadline / 2))


def release_bound(election: str, timing: Timing) -> float:
    """The longest :meth:`Elector.release` of ``election`` (``none``, ``postgres`` or
    ``kubernetes``) waits on the network, in seconds: the PostgreSQL unlock is bounded by the
    renew deadline; the Lease release is a read and a write of :func:`api_timeout` each."""
    return {"none": 0.0, "postgres": timing.renew_deadline, "kubernetes": 2 * api_timeout(timing)}[
        election
    ]


class Elector(ABC):
    """One instance's side of the election.

    :meth:`acquire` tries once and never waits for another holder. :meth:`ensure` re-checks
    before each step and raises :class:`LeadershipLost` if this instance does not lead.
    :meth:`run` is the background loop: as a standby it calls :meth:`acquire` every
    ``retry_period``; as the leader it renews (and re-checks) every ``retry_period``, keeps
    ``health.leading`` and ``health.lease_valid_until`` current, calls ``on_change`` on each
    transition, and raises :class:`LeadershipLost` when leadership is lost (the daemon then
    exits: in-flight work is not safe to continue). :meth:`release` gives leadership up so a
    standby can take over at once; it is idempotent and never raises.
    """

    kind: ClassVar[str]

    def __init__(self, *, health: Health, timing: Timing, clock: Clock | None = None) -> None:
        self.health = health
        self.timing = timing
        self.clock: Clock = clock or SystemClock()
        self._leading = False
        self._reported = False
        """What :attr:`health` and ``on_change`` were last told."""
        self._on_change: OnChange | None = None
        self._loss: str | None = None
        """Why leadership held by this instance was lost (it is not taken again)."""
        self._released = False

    @property
    def is_leader(self) -> bool:
        """What this instance last established (no I/O); :meth:`ensure` re-checks."""
        return self._leading

    @abstractmethod
    async def acquire(self) -> bool:
        """One non-blocking attempt to become (or stay) the leader; True when leading.

        Backend failures are logged and answer False; never raises them."""

    @abstractmethod
    async def ensure(self) -> None:
        """Raise :class:`LeadershipLost` unless this instance still leads (checked now)."""

    @abstractmethod
    async def release(self) -> None:
        """Give leadership up (if held) and close connections. Idempotent; never raises."""

    async def _renew(self) -> None:
        """Keep leadership while leading; raise :class:`LeadershipLost` when it is gone.

        By default a re-check (:meth:`ensure`); a lease-based elector also renews its lease."""
        await self.ensure()

    def _valid_for(self) -> float | None:
        """Seconds this instance may still consider itself the leader without renewing."""
        return self.timing.lease_duration

    async def run(self, *, on_change: OnChange | None = None) -> None:
        """Contend for leadership until cancelled, or until leadership is lost.

        Raises :class:`LeadershipLost` after a loss, whether the loop or a step's
        :meth:`ensure` found it (``on_change(False)`` has been called and ``health.leading`` is
        False): a lost leader does not contend again, the daemon exits. Returns after
        :meth:`release`. Cancelling the task leaves leadership as it is: call :meth:`release`
        afterwards."""
        self._on_change = on_change
        while not self._released:
            if self._loss is not None:
                raise LeadershipLost(self._loss)
            if self._leading and self._reported:
                try:
                    await self._renew()
                except LeadershipLost:
                    self._transition(False)
                    raise
                self._touch()
            elif self._leading or await self.acquire():
                self._transition(True)
            await self.clock.sleep(self.timing.retry_period)

    def _touch(self) -> None:
        """Record a successful acquisition or renewal in :attr:`health`."""
        valid = self._valid_for()
        self.health.lease_valid_until = (
            None if valid is None else self.health.monotonic() + max(0.0, valid)
        )

    def _transition(self, leading: bool) -> None:
        """Set the state, health and metric callback after a change (not before)."""
        changed = leading != self._reported
        self._leading = self._reported = leading
        self.health.leading = leading
        if leading:
            self._touch()
        else:
            self.health.lease_valid_until = None
        if changed:
            log.warning("leadership_gained" if leading else "leadership_lost", election=self.kind)
            if self._on_change is not None:
                try:
                    self._on_change(leading)
                except Exception:
                    log.exception("leader_callback_failed")

    def _known(self) -> None:
        """The election's backend answered: who leads is known (``/readyz`` may say ready)."""
        self.health.problems.pop("leader", None)

    def _unknown(self) -> None:
        """The election's backend did not answer: this standby cannot tell who leads."""
        self.health.problems["leader"] = f"the {self.kind} election cannot tell who leads"

    def _lost(self, why: str) -> LeadershipLost:
        """Mark leadership lost (state and health) and build the error to raise."""
        message = f"{self.kind} leadership lost: {why}"
        if self._leading:
            self._loss = message
            self._transition(False)
        return LeadershipLost(message)

    def _release_done(self) -> None:
        """Record a release: health and callback told, :meth:`run` returns."""
        self._released = True
        if self._leading or self._reported:
            self._transition(False)


# --------------------------------------------------------------------------------------------
# none
# --------------------------------------------------------------------------------------------


class SoleElector(Elector):
    """No election: this instance always leads (one instance; SQLite state)."""

    kind = "none"

    async def acquire(self) -> bool:
        self._leading = True
        return True

    async def ensure(self) -> None:
        if not self._leading:
            raise LeadershipLost("none: released")

    async def release(self) -> None:
        self._release_done()

    def _valid_for(self) -> float | None:
        return None  # no lease to go stale


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def leader_lock_key(lease_name: str) -> int:
    """The advisory lock id of ``leader.lease_name``: a signed 64-bit number from its hash,
    distinct from :data:`MIGRATION_LOCK_KEY`. Advisory locks are per database, so instances
    share a leader exactly when they share the state database and the lease name."""
    digest = hashlib.sha256(f"rotator-leader:{lease_name}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    return key if key != MIGRATION_LOCK_KEY else key ^ 1


_HELD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
  AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1
"""


class PostgresElector(Elector):
    """Leadership as a PostgreSQL session advisory lock (``pg_try_advisory_lock``).

    The lock lives as long as one dedicated connection (autocommit, TCP keepalives), opened by
    :meth:`acquire` and kept for the process lifetime. Before each step :meth:`ensure` asks
    that connection whether its session still holds the lock (``pg_locks``, a cheap catalog
    read, bounded by ``renew_deadline``); any error or timeout counts as a loss, because the
    server releases a session's locks when the session ends. The daemon exits on a loss.

    **Not behind PgBouncer in transaction (or statement) pooling mode**: the lock belongs to a
    server session, and a transaction pooler hands that session to other clients between
    transactions — the lock could be released under us or held for someone else, and the
    check would run on another session. Give ``state.url`` a direct connection to PostgreSQL
    (or a session-pooling PgBouncer).

    A leader whose host vanishes keeps the lock until the server notices the dead TCP peer:
    set the server's ``tcp_keepalives_idle``/``_interval``/``_count`` (or
    ``client_connection_check_interval``) low enough for the hand-over time you need.
    """

    kind = "postgres"

    def __init__(
        self,
        conninfo: str,
        *,
        lock_key: int,
        health: Health,
        timing: Timing,
        clock: Clock | None = None,
        safe_url: str = "postgresql",
        identity: str | None = None,
    ) -> None:
        super().__init__(health=health, timing=timing, clock=clock)
        if lock_key == MIGRATION_LOCK_KEY:
            raise ValueError("the leader lock key must differ from the migrations' key")
        self._conninfo = conninfo
        self._key = lock_key
        self._safe_url = safe_url
        self._identity = identity or default_identity()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the dedicated connection (None when not connected)."""
        return self._conn.info.backend_pid if self._conn is not None else None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        if self._conn is None or self._conn.closed:
            timeout = max(1, int(self.timing.renew_deadline))
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=timeout,
                application_name=f"rotator-leader {self._identity}"[:63],
                keepalives=1,
                keepalives_idle=timeout,
                keepalives_interval=max(1, timeout // 3),
                keepalives_count=3,
            )
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def acquire(self) -> bool:
        if self._leading:
            return True  # the lock is re-entrant: taking it twice would need two unlocks
        import psycopg

        try:
            async with asyncio.timeout(self.timing.renew_deadline):
                conn = await self._connection()
                cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning(
                "leader_acquire_failed", election=self.kind, url=self._safe_url, error=_why(exc)
            )
            self._unknown()
            await self._close()
            return False
        self._known()
        self._leading = bool(row and row[0])
        return self._leading

    async def ensure(self) -> None:
        if not self._leading or self._conn is None:
            raise self._lost("not holding the lock")
        import psycopg

        high, low = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF
        try:
            async with asyncio.timeout(self.timing.renew_deadline):
                cursor = await self._conn.execute(_HELD, (high, low))
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._close()
            raise self._lost(f"the lock connection failed ({_why(exc)})") from None
        if not row or not row[0]:
            await self._close()
            raise self._lost("the session no longer holds the lock")

    async def release(self) -> None:
        if self._leading and self._conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timing.renew_deadline):
                    await self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        await self._close()  # closing the session releases its locks anyway
        self._release_done()

    def _valid_for(self) -> float | None:
        # No lease on the server: "fresh" means the renew loop checked within a lease duration.
        return self.timing.lease_duration


def _why(exc: BaseException) -> str:
    """A one-line, secret-free reason (psycopg messages may quote the connection string)."""
    from rotator.logs import scrub

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# --------------------------------------------------------------------------------------------
# Kubernetes Lease
# --------------------------------------------------------------------------------------------

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def _micro_time(when: datetime) -> str:
    """Kubernetes ``MicroTime``: RFC 3339 UTC with microseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesLeaseElector(Elector):
    """Leadership as a ``coordination.k8s.io/v1`` Lease, the client-go algorithm.

    Each try GETs the Lease: absent → POST it naming this instance (201 = leader, 409 = someone
    was faster); held by another and still valid → standby; free, expired or ours → PUT it with
    the observed ``resourceVersion`` (200 = leader, 409 = lost the race). Expiry is judged on
    this instance's monotonic clock from when it last saw the record change, not from the
    record's ``renewTime``, so clock skew between nodes cannot shorten a lease.

    The leader renews every ``retry_period``; a renewal that fails is retried, and when none
    has succeeded for ``renew_deadline`` (shorter than the lease) leadership is lost. Seeing
    another holder on the Lease is an immediate loss. :meth:`ensure` is a local check of that
    deadline (no API call). :meth:`release` empties ``holderIdentity`` so a standby takes over
    at its next try. The bearer token is re-read from its file for every request (kubelet
    rotates it). RBAC: get/update on this Lease, create on leases in the namespace.
    """

    kind = "kubernetes"

    def __init__(
        self,
        *,
        api_url: str,
        namespace: str,
        lease_name: str,
        identity: str,
        token_path: Path,
        health: Health,
        timing: Timing,
        verify: ssl.SSLContext | bool = True,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(health=health, timing=timing, clock=clock)
        self.identity = identity
        self.namespace = namespace
        self.lease_name = lease_name
        self._token_path = token_path
        self._collection = LEASES.format(namespace=namespace)
        self._path = f"{self._collection}/{lease_name}"
        self._http = httpx.AsyncClient(
            base_url=api_url,
            verify=verify,
            transport=transport,
            timeout=api_timeout(timing),
        )
        self._observed: dict[str, Any] | None = None
        """The Lease's spec when last seen to change."""
        self._observed_at = 0.0
        self._observed_version: str | None = None
        self._renewed_at: float | None = None
        """Monotonic time of this instance's last successful acquisition or renewal."""

    # -- the election ----------------------------------------------------------------------

    async def acquire(self) -> bool:
        try:
            return await self._try_acquire_or_renew()
        except LeadershipLost:
            return False

    async def _renew(self) -> None:
        if not await self._try_acquire_or_renew():
            await self.ensure()  # tolerated until renew_deadline has passed

    async def ensure(self) -> None:
        if not self._leading or self._renewed_at is None:
            raise self._lost("not holding the lease")
        if self.clock.monotonic() - self._renewed_at > self.timing.renew_deadline:
            raise self._lost(f"not renewed within {self.timing.renew_deadline:g}s")

    def _valid_for(self) -> float | None:
        if self._renewed_at is None:
            return None
        return self._renewed_at + self.timing.renew_deadline - self.clock.monotonic()

    async def _try_acquire_or_renew(self) -> bool:
        """One round of the algorithm; True when leading afterwards. Raises
        :class:`LeadershipLost` only when this instance led and the Lease names another."""
        try:
            answer = await self._request("GET", self._path)
            if answer.status_code == 404:
                return await self._create()
            if answer.status_code != 200:
                return self._refused("get", answer)
            lease = answer.json()
            self._known()
            spec: dict[str, Any] = lease.get("spec") or {}
            now = self.clock.monotonic()
            if spec != self._observed:
                self._observed, self._observed_at = spec, now
            holder = spec.get("holderIdentity") or ""
            duration = float(spec.get("leaseDurationSeconds") or self.timing.lease_duration)
            if holder and holder != self.identity:
                if self._leading:
                    raise self._lost(f"the lease is held by {holder}")
                if self._observed_at + duration > now:
                    return False
            return await self._update(lease, spec, holder)
        except (httpx.HTTPError, ValueError, OSError) as exc:
            log.warning("leader_lease_unreachable", election=self.kind, error=_why(exc))
            self._unknown()
            return False

    def _spec(self, previous: Mapping[str, Any], holder: str) -> dict[str, Any]:
        now = _micro_time(self.clock.now())
        ours = holder == self.identity
        transitions = int(previous.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.timing.lease_duration)),
            "acquireTime": previous.get("acquireTime") if ours else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours or not previous else transitions + 1,
        }

    async def _create(self) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.lease_name, "namespace": self.namespace},
            "spec": self._spec({}, ""),
        }
        answer = await self._request("POST", self._collection, json=body)
        if answer.status_code == 409:
            return False
        if answer.status_code not in {200, 201}:
            return self._refused("create", answer)
        return self._won(answer)

    async def _update(self, lease: dict[str, Any], spec: dict[str, Any], holder: str) -> bool:
        body = dict(lease)
        body["spec"] = self._spec(spec, holder)
        answer = await self._request("PUT", self._path, json=body)
        if answer.status_code == 409:
            return False  # someone wrote in between: the next round looks again
        if answer.status_code != 200:
            return self._refused("update", answer)
        return self._won(answer)

    def _won(self, answer: httpx.Response) -> bool:
        lease = answer.json()
        self._observed = lease.get("spec") or {}
        self._observed_at = self._renewed_at = self.clock.monotonic()
        self._observed_version = (lease.get("metadata") or {}).get("resourceVersion")
        self._leading = True
        return True

    def _refused(self, operation: str, answer: httpx.Response) -> bool:
        log.warning(
            "leader_lease_refused",
            election=self.kind,
            operation=operation,
            status=answer.status_code,
            lease=f"{self.namespace}/{self.lease_name}",
        )
        return False

    async def release(self) -> None:
        if self._leading:
            with contextlib.suppress(httpx.HTTPError, ValueError, OSError):
                answer = await self._request("GET", self._path)
                if answer.status_code == 200:
                    lease = answer.json()
                    spec = lease.get("spec") or {}
                    if spec.get("holderIdentity") == self.identity:
                        now = _micro_time(self.clock.now())
                        lease["spec"] = {
                            **spec,
                            "holderIdentity": None,
                            "leaseDurationSeconds": 1,
                            "acquireTime": now,
                            "renewTime": now,
                        }
                        await self._request("PUT", self._path, json=lease)
        self._release_done()
        self._renewed_at = None
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self._token_path.read_text().strip()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        return await self._http.request(method, path, headers=headers, **kwargs)


# --------------------------------------------------------------------------------------------
# choosing one
# --------------------------------------------------------------------------------------------


def default_identity() -> str:
    """``<hostname>_<random>``: the pod name in Kubernetes, unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _is_postgres(url: str) -> bool:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name() == "postgresql"


def _conninfo(url: str) -> str:
    """The libpq URI of a SQLAlchemy ``postgresql+driver://`` URL (password kept)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def build_elector(
    cfg: Config,
    health: Health,
    *,
    clock: Clock | None = None,
    identity: str | None = None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Elector:
    """The elector ``cfg.leader`` asks for; connects to nothing yet.

    Raises :class:`ConfigError` when ``postgres`` is asked without PostgreSQL state, or
    ``kubernetes`` outside a cluster (no ``KUBERNETES_SERVICE_HOST`` or service-account token).
    """
    settings = cfg.leader
    timing = Timing(
        lease_duration=settings.lease_duration.total_seconds(),
        renew_deadline=settings.renew_deadline.total_seconds(),
        retry_period=settings.retry_period.total_seconds(),
    )
    election = settings.election
    if election == "auto":
        election = "postgres" if _is_postgres(cfg.state.url) else "none"
    if election == "none":
        return SoleElector(health=health, timing=timing, clock=clock)
    if election == "postgres":
        if not _is_postgres(cfg.state.url):
            raise ConfigError(
                cfg.source, "leader.election", "postgres needs state.url on PostgreSQL"
            )
        return PostgresElector(
            _conninfo(cfg.state.url),
            lock_key=leader_lock_key(settings.lease_name),
            health=health,
            timing=timing,
            clock=clock,
            safe_url=cfg.state.safe_url,
            identity=identity,
        )
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    token = service_account_dir / "token"
    if not host or not token.is_file():
        raise ConfigError(
            cfg.source,
            "leader.election",
            "kubernetes needs to run in a pod (KUBERNETES_SERVICE_HOST and a service-account"
            f" token at {token})",
        )
    namespace = settings.namespace
    if namespace is None:
        ns_file = service_account_dir / "namespace"
        try:
            namespace = ns_file.read_text().strip()
        except OSError:
            namespace = ""
        if not namespace:
            raise ConfigError(cfg.source, "leader.namespace", f"not given and {ns_file} unreadable")
    ca = service_account_dir / "ca.crt"
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca)) if ca.is_file() else True
    )
    bracketed = f"[{host}]" if ":" in host else host
    return KubernetesLeaseElector(
        api_url=f"https://{bracketed}:{port}",
        namespace=namespace,
        lease_name=settings.lease_name,
        identity=identity or default_identity(),
        token_path=token,
        health=health,
        timing=timing,
        verify=verify,
        clock=clock,
    )


__all__ = [
    "Elector",
    "KubernetesLeaseElector",
    "LeadershipLost",
    "OnChange",
    "PostgresElector",
    "SoleElector",
    "Timing",
    "api_timeout",
    "build_elector",
    "default_identity",
    "leader_lock_key",
    "release_bound",
]
