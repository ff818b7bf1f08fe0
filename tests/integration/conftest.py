"""Integration fixtures: a real OpenBao dev server and a real (fixed) moto server on loopback."""

from __future__ import annotations

from tests.support.fixtures import blocking_pool, moto, moto_server, openbao, openbao_server

__all__ = ["blocking_pool", "moto", "moto_server", "openbao", "openbao_server"]
