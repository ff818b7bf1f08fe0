"""``leader.election: kubernetes``: leadership as a ``coordination.k8s.io/v1`` Lease.

The Lease is renewed with resourceVersion compare-and-swap, the client-go algorithm
(cert-manager's 60 s lease / 40 s renew deadline / 15 s retry by default).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from rotator.clock import Clock
from rotator.daemon.control import Health
from rotator.daemon.leader.base import Elector, Timing, _why, api_timeout
from rotator.errors import LeadershipLost

log = structlog.get_logger(__package__)  # the package's name, as before the split

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
            self.holder = holder or None
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


__all__ = ["LEASES", "SERVICE_ACCOUNT_DIR", "KubernetesLeaseElector"]
