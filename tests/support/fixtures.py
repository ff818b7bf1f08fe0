"""Session fixtures for the real servers, shared by tests/integration and tests/contract.

Both conftests import these fixtures; the servers themselves are started once per pytest run
(cached here) and stopped when the run ends, whichever directory asked first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from rotator.pool import BlockingPool
from tests.support.harness import MotoEnv, OpenBaoEnv
from tests.support.servers import ServerProcess, start_moto, start_openbao

T = TypeVar("T")

_ONCE: dict[str, object] = {}


def _once(key: str, make: Callable[[], T]) -> T:
    if key not in _ONCE:
        _ONCE[key] = make()
    return _ONCE[key]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def blocking_pool() -> Iterator[BlockingPool]:
    """The bounded pool destinations run their SDK calls on."""
    with BlockingPool(max_workers=8) as pool:
        yield pool


@pytest.fixture(scope="session")
def openbao_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> ServerProcess:
    """``bao server -dev`` on a free 127.0.0.1 port for the whole run."""

    def start() -> ServerProcess:
        server = start_openbao(tmp_path_factory.mktemp("openbao"))
        pytestconfig.add_cleanup(server.stop)
        return server

    return _once("openbao", start)


@pytest.fixture(scope="session")
def openbao(openbao_server: ServerProcess) -> OpenBaoEnv:
    """The OpenBao server with rotator's policy, its tokens and an AppRole."""
    return _once("openbao-env", lambda: OpenBaoEnv.prepare(openbao_server.url))


@pytest.fixture(scope="session")
def moto_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> ServerProcess:
    """moto (with the Secrets Manager fix) enforcing IAM after the set-up requests."""

    def start() -> ServerProcess:
        server = start_moto(
            tmp_path_factory.mktemp("moto"), initial_no_auth_actions=MotoEnv.SETUP_REQUESTS
        )
        pytestconfig.add_cleanup(server.stop)
        return server

    return _once("moto", start)


@pytest.fixture(scope="session")
def moto(moto_server: ServerProcess) -> MotoEnv:
    """The moto server with its IAM users: admin (harness), rotator, and one lacking each
    action rotator calls."""
    return _once("moto-env", lambda: MotoEnv.prepare(moto_server.url))
