"""The SDK seams turn any failure into rotator's error tree: a local OSError (an unreadable CA
bundle) or an answer of an unexpected shape is one scrubbed PermanentError naming the backend
and the operation, never a bare KeyError or OSError (which ``rotator check`` printed as an
"internal error" with a traceback).

The answers come from a canned HTTP server on 127.0.0.1 that replies ``200 {}`` (or a given JSON
body) to every request: what a proxy, a wrong URL or another API version could send.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from rotator.destinations.aws.api import Boto3SecretsManager
from rotator.destinations.vault.api import HvacApi
from rotator.errors import PermanentError, TransientError
from rotator.secret import Secret
from tests.support.servers import free_port

pytestmark = pytest.mark.integration


class CannedServer:
    """Answers every request with 200 and ``body`` (JSON)."""

    def __init__(self) -> None:
        self.body: object = {}
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                payload = json.dumps(canned.body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server's naming

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Silent."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def canned() -> Iterator[CannedServer]:
    server = CannedServer()
    yield server
    server.close()


def vault(url: str) -> HvacApi:
    api = HvacApi.connect(url, timeout=5)
    api.use_token(Secret("s.canned-test-token"))
    return api


VAULT_CALLS: list[tuple[str, object, Callable[[HvacApi], object]]] = [
    ("write", {"data": {}}, lambda api: api.write("secret", "p", {"a": "b"}, cas=0)),
    (
        "login",
        {"data": None},
        lambda api: api.login_approle(role_id="r", secret_id=Secret("s"), mount="approle"),
    ),
    (
        "login",
        {"auth": {}},
        lambda api: api.login_kubernetes(role="r", jwt=Secret("j"), mount="kubernetes"),
    ),
    ("read", {"data": ["not", "a", "mapping"]}, lambda api: api.read_version("secret", "p")),
    ("read", {"data": {"metadata": {"version": "x"}}}, lambda api: api.read_version("secret", "p")),
    ("capabilities", {"data": "no"}, lambda api: api.capabilities(["secret/data/p"])),
    ("lookup-self", {"data": {"ttl": "forever"}}, lambda api: api.lookup_self()),
    ("renew-self", {"auth": {"lease_duration": "long"}}, lambda api: api.renew_self()),
]


VAULT_IDS = [f"{call[0]}-{index}" for index, call in enumerate(VAULT_CALLS)]


@pytest.mark.parametrize(("operation", "body", "call"), VAULT_CALLS, ids=VAULT_IDS)
def test_malformed_vault_answer_is_a_permanent_error(
    canned: CannedServer, operation: str, body: object, call: Callable[[HvacApi], object]
) -> None:
    """A Vault answer missing the fields rotator reads is a PermanentError naming the operation."""
    canned.body = body
    with pytest.raises(PermanentError) as caught:
        call(vault(canned.url))
    assert str(caught.value).startswith(f"vault {operation} ")
    assert "unexpected" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unreadable_ca_bundle_is_a_permanent_error() -> None:
    """A ca_cert that cannot be read (requests raises a plain OSError) is a PermanentError."""
    api = HvacApi.connect(
        f"https://127.0.0.1:{free_port()}", ca_cert="/nonexistent/rotator-ca.pem", timeout=5
    )
    api.use_token(Secret("s.canned-test-token"))
    with pytest.raises(PermanentError) as caught:
        api.lookup_self()
    assert not isinstance(caught.value, TransientError)
    assert str(caught.value).startswith("vault lookup-self auth/token/lookup-self: ")
    assert "CA certificate bundle" in str(caught.value)


def aws(url: str) -> Boto3SecretsManager:
    session = boto3.session.Session(
        aws_access_key_id="AKIDCANNEDTEST", aws_secret_access_key="canned-secret-key"
    )
    return Boto3SecretsManager.connect(
        region="eu-west-1", endpoint_url=url, timeout=5, session=session
    )


AWS_CALLS: list[tuple[str, object, Callable[[Boto3SecretsManager], object]]] = [
    ("GetSecretValue", {}, lambda api: api.get_value("s")),
    (
        "PutSecretValue",
        {},
        lambda api: api.put_value(
            "s", token="0" * 32, value=Secret("canned value"), stages=["AWSPENDING"]
        ),
    ),
    (
        "CreateSecret",
        {},
        lambda api: api.create(
            "s", token="0" * 32, value=Secret("canned value"), kms_key_id=None, tags={}
        ),
    ),
    ("DescribeSecret", {"Tags": [{"Key": "k"}]}, lambda api: api.describe("s")),
]


@pytest.mark.parametrize(("operation", "body", "call"), AWS_CALLS, ids=[c[0] for c in AWS_CALLS])
def test_malformed_aws_answer_is_a_permanent_error(
    canned: CannedServer,
    operation: str,
    body: object,
    call: Callable[[Boto3SecretsManager], object],
) -> None:
    """A Secrets Manager answer missing the fields rotator reads is a PermanentError naming the
    action."""
    canned.body = body
    with pytest.raises(PermanentError) as caught:
        call(aws(canned.url))
    assert str(caught.value).startswith(f"aws {operation} s: ")
    assert "unexpected" in str(caught.value)
    assert "canned value" not in str(caught.value)
