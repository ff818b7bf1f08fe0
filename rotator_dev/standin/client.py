"""``StandinControl``: a small synchronous client for the stand-in's ``/_standin`` control API.

For tests, the demo and benchmarks. Every method is one HTTP call; a refusal raises
:class:`StandinControlError` with the status and the stand-in's detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from rotator_dev.standin.faults import FaultKind, FaultWhen, Operation
from rotator_dev.standin.records import KeyFacts, Settings


class StandinControlError(RuntimeError):
    """The control API refused a request."""

    def __init__(self, status: int, detail: object) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"stand-in control: HTTP {status}: {detail}")


class StandinControl:
    """Steers one stand-in at ``base_url`` (the same base URL as its Mistral API)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/_standin", timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StandinControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        if response.status_code != 200:
            try:
                detail: object = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise StandinControlError(response.status_code, detail)
        data: dict[str, Any] = response.json()
        return data

    # -- lifecycle and clock -----------------------------------------------------------------

    def reset(self) -> None:
        """Back to the seed organization, real time, no faults, zero counters."""
        self._call("POST", "/reset")

    def _clock(self, body: dict[str, Any] | None = None) -> datetime:
        data = self._call("POST", "/clock", json=body) if body else self._call("GET", "/clock")
        return datetime.fromisoformat(data["now"])

    def now(self) -> datetime:
        """The stand-in's current time (UTC)."""
        return self._clock()

    def set_now(self, when: datetime, *, frozen: bool = False) -> datetime:
        """Jump the clock to ``when``; it keeps ticking from there unless ``frozen``."""
        return self._clock({"now": when.isoformat(), "frozen": frozen})

    def advance(self, seconds: float = 0.0, *, days: float = 0.0) -> datetime:
        """Move the clock forward (frozen or not); returns the new time."""
        return self._clock({"advance_seconds": seconds + days * 86400})

    # -- switches ----------------------------------------------------------------------------

    def settings(self) -> Settings:
        return Settings(**self._call("GET", "/settings"))

    def _set(self, **changes: Any) -> Settings:
        return Settings(**self._call("POST", "/settings", json=changes))

    def set_activation_delay(self, seconds: float) -> None:
        """New keys answer 401 on /v1/models for ``seconds`` of stand-in time."""
        self._set(activation_delay_seconds=seconds)

    def set_revocation_delay(self, seconds: float) -> None:
        """Deleted keys keep working on /v1/models for ``seconds`` of stand-in time."""
        self._set(revocation_delay_seconds=seconds)

    def set_billing_active(self, active: bool) -> None:
        """When inactive, every valid key gets 402 on /v1/models."""
        self._set(billing_active=active)

    def set_max_expiration_days(self, days: int | None) -> None:
        """The organization's expiration policy; ``None`` = no policy."""
        self._set(max_expiration_days=days)

    def set_list_deleted(self, enabled: bool) -> None:
        """Whether the Admin API list still shows deleted keys."""
        self._set(list_deleted=enabled)

    def set_spend_limit(self, workspace_id: str, reached: bool) -> None:
        """Turn a workspace's "monthly spending limit reached" switch on or off."""
        self._call("POST", f"/workspaces/{workspace_id}/spend-limit", json={"reached": reached})

    # -- organization ------------------------------------------------------------------------

    def add_workspace(
        self,
        name: str,
        *,
        workspace_id: str | None = None,
        description: str | None = None,
        icon: str | None = None,
    ) -> str:
        """Create a workspace; returns its uuid."""
        body = {"name": name, "uuid": workspace_id, "description": description, "icon": icon}
        return str(self._call("POST", "/workspaces", json=body)["uuid"])

    def archive_workspace(self, workspace_id: str) -> None:
        self._call("POST", f"/workspaces/{workspace_id}/archive")

    def add_user(
        self,
        email: str,
        *,
        user_id: str | None = None,
        name: str | None = None,
        role: str = "member",
    ) -> str:
        """Add an organization member; returns its uuid."""
        body = {"email": email, "uuid": user_id, "name": name, "role": role}
        return str(self._call("POST", "/users", json=body)["uuid"])

    # -- faults ------------------------------------------------------------------------------

    def inject(
        self,
        operation: Operation | str,
        kind: FaultKind | str,
        *,
        status: int = 503,
        retry_after: int | None = None,
        seconds: float | None = None,
        count: int | None = 1,
        when: FaultWhen | str = FaultWhen.BEFORE,
    ) -> None:
        """Arm a fault for the next ``count`` calls of ``operation`` (``None`` = until cleared)."""
        body = {
            "operation": str(operation),
            "kind": str(kind),
            "status": status,
            "retry_after": retry_after,
            "seconds": seconds,
            "count": count,
            "when": str(when),
        }
        self._call("POST", "/faults", json=body)

    def fail(
        self,
        operation: Operation | str,
        status: int = 503,
        *,
        retry_after: int | None = None,
        count: int | None = 1,
        when: FaultWhen | str = FaultWhen.BEFORE,
    ) -> None:
        """Answer ``status`` (with ``Retry-After`` if given) instead of the real answer."""
        self.inject(
            operation,
            FaultKind.STATUS,
            status=status,
            retry_after=retry_after,
            count=count,
            when=when,
        )

    def hang(
        self,
        operation: Operation | str,
        seconds: float | None = None,
        *,
        count: int | None = 1,
        when: FaultWhen | str = FaultWhen.BEFORE,
    ) -> None:
        """Wait ``seconds`` before answering; ``None`` = until the client gives up."""
        self.inject(operation, FaultKind.HANG, seconds=seconds, count=count, when=when)

    def drop(
        self,
        operation: Operation | str,
        *,
        count: int | None = 1,
        when: FaultWhen | str = FaultWhen.BEFORE,
    ) -> None:
        """Close the connection without an answer."""
        self.inject(operation, FaultKind.DROP, count=count, when=when)

    def add_latency(
        self, operation: Operation | str, seconds: float, *, count: int | None = None
    ) -> None:
        """Delay every call of ``operation`` by ``seconds`` (until cleared by default)."""
        self.inject(operation, FaultKind.LATENCY, seconds=seconds, count=count)

    def clear_faults(self, operation: Operation | str | None = None) -> None:
        """Disarm the faults of ``operation``, or all of them."""
        params = {"operation": str(operation)} if operation is not None else None
        self._call("DELETE", "/faults", params=params)

    def faults(self) -> dict[str, list[dict[str, Any]]]:
        """Armed faults per operation, each with its ``remaining`` uses."""
        armed: dict[str, list[dict[str, Any]]] = self._call("GET", "/faults")["faults"]
        return armed

    # -- observation -------------------------------------------------------------------------

    def key_facts(self) -> list[KeyFacts]:
        """Every key ever issued, deleted ones included, oldest first."""
        return [KeyFacts.from_json(k) for k in self._call("GET", "/keys")["keys"]]

    def key(self, key_id: str) -> KeyFacts:
        """One key's facts. Raises ``KeyError`` if the stand-in never issued it."""
        for facts in self.key_facts():
            if facts.key_id == key_id:
                return facts
        raise KeyError(key_id)

    def requests(self) -> dict[str, int]:
        """Requests received per operation since the last reset."""
        counts: dict[str, int] = self._call("GET", "/requests")["requests"]
        return counts


@dataclass(frozen=True, slots=True)
class StandinHandle:
    """What a test or benchmark needs to talk to a running stand-in."""

    url: str
    admin_key: str
    control: StandinControl
    user_id: str
    workspace_id: str
