"""The fault-injecting proxy itself: it forwards faithfully, and its faults fire as armed."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rotator.destinations.aws.api import Boto3SecretsManager
from rotator.destinations.vault.api import HvacApi
from rotator.errors import AuthError, TransientError
from rotator.secret import Secret
from tests.support.faultproxy import FaultProxy, Match, aws_call, vault_data
from tests.support.harness import MotoEnv, OpenBaoEnv
from tests.support.servers import AWS_REGION

pytestmark = pytest.mark.integration


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with what it received; ``/chunked`` answers in chunks."""

    protocol_version = "HTTP/1.1"
    received: list[dict[str, str]]

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode()
        seen = {
            "method": self.command,
            "path": self.path,
            "host": self.headers["host"],
            "body": body,
        }
        self.server.received.append(seen)  # type: ignore[attr-defined]
        payload = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(payload) // 2
            for part in (payload[:half], payload[half:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's handler names

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        return


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    """A small echo server on a free loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: ThreadingHTTPServer) -> Iterator[FaultProxy]:
    """A Vault-flavoured proxy in front of the echo server."""
    host, port = upstream.server_address[:2]
    with FaultProxy(f"http://{host!s}:{port}", flavour="vault") as running:
        yield running


def test_forwards_unchanged_and_keeps_the_connection(
    proxy: FaultProxy, upstream: ThreadingHTTPServer
) -> None:
    """Requests reach the upstream with Host and body intact; chunked answers are re-framed."""
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        first = client.post("/v1/secret/data/a", json={"x": 1})
        second = client.get("/chunked")
    assert first.status_code == second.status_code == 200
    assert first.json()["host"] == proxy.url.removeprefix("http://")
    assert json.loads(first.json()["body"]) == {"x": 1}
    assert second.json()["path"] == "/chunked"
    assert [s.outcome for s in proxy.seen] == ["forwarded", "forwarded"]
    assert len(upstream.received) == 2  # type: ignore[attr-defined]


def test_status_fault_fires_on_matching_requests_after_skip_for_count(proxy: FaultProxy) -> None:
    """A rule skips its first matches, answers a Vault-shaped error ``count`` times, then stops."""
    rule = proxy.fail(vault_data("a", "GET"), 503, count=2, skip=1)
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        statuses = [client.get("/v1/secret/data/a").status_code for _ in range(4)]
        other = client.get("/v1/secret/data/ab").status_code
        versioned = client.get("/v1/secret/data/a?version=2")
    assert statuses == [200, 503, 503, 200]
    assert other == 200
    assert versioned.status_code == 200
    assert (rule.fired, rule.passed) == (2, 1)


def test_aws_flavour_names_the_operation(upstream: ThreadingHTTPServer) -> None:
    """An AWS-flavoured 403 is an AccessDeniedException naming the X-Amz-Target action."""
    host, port = upstream.server_address[:2]
    with FaultProxy(f"http://{host!s}:{port}", flavour="aws") as aws:
        aws.fail(aws_call("PutSecretValue"), 403, count=None)
        with httpx.Client(base_url=aws.url, timeout=5) as client:
            denied = client.post("/", headers={"X-Amz-Target": "secretsmanager.PutSecretValue"})
            allowed = client.post("/", headers={"X-Amz-Target": "secretsmanager.GetSecretValue"})
    assert denied.status_code == 403
    assert denied.json()["__type"] == "AccessDeniedException"
    assert "secretsmanager:PutSecretValue" in denied.json()["Message"]
    assert allowed.status_code == 200


def test_aws_rules_name_one_secret(upstream: ThreadingHTTPServer) -> None:
    """A rule for one SecretId (and a body pattern) leaves calls on other secrets alone."""
    host, port = upstream.server_address[:2]
    target = {"X-Amz-Target": "secretsmanager.GetSecretValue"}
    with FaultProxy(f"http://{host!s}:{port}", flavour="aws") as aws:
        aws.fail(aws_call("GetSecretValue", "mistral/a", body='"VersionId"'), 503, count=None)
        with httpx.Client(base_url=aws.url, timeout=5) as client:
            hit = client.post("/", headers=target, json={"SecretId": "mistral/a", "VersionId": "v"})
            plain = client.post("/", headers=target, json={"SecretId": "mistral/a"})
            other = client.post(
                "/", headers=target, json={"SecretId": "mistral/b", "VersionId": "v"}
            )
    assert [hit.status_code, plain.status_code, other.status_code] == [503, 200, 200]


def test_removing_a_rule_releases_its_hang(proxy: FaultProxy) -> None:
    """A request held by a hang is let go (closed) when its rule is removed; others stay armed."""
    held = proxy.hang(Match(path="^/held"), count=None)
    kept = proxy.fail(Match(path="^/kept"), 500, count=None)
    outcome: list[BaseException] = []

    def wait() -> None:
        with httpx.Client(base_url=proxy.url, timeout=20) as client:
            try:
                client.get("/held")
            except httpx.HTTPError as exc:
                outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    while not any(s.target == "/held" for s in proxy.seen):
        threading.Event().wait(0.01)
    proxy.remove(held)
    waiter.join()
    assert [type(e) for e in outcome] == [httpx.RemoteProtocolError]
    assert proxy.rules() == [kept]


def test_hang_outlasts_the_client_timeout_until_cleared(proxy: FaultProxy) -> None:
    """A hung request times out at the client; after clear() requests pass again."""
    proxy.hang(Match(path="^/slow"), count=None)
    with httpx.Client(base_url=proxy.url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/slow")
        proxy.clear()
        assert client.get("/slow").status_code == 200


def test_drop_closes_without_an_answer(proxy: FaultProxy) -> None:
    """A dropped request gets no answer; the next one (a new connection) is served."""
    proxy.drop(Match(method="POST"))
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/x", content=b"1")
        assert client.post("/v1/x", content=b"2").status_code == 200


def test_after_forwards_first(proxy: FaultProxy, upstream: ThreadingHTTPServer) -> None:
    """With after=True the upstream acts on the request, but the client sees the fault."""
    proxy.fail(Match(method="POST"), 500, after=True)
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        assert client.post("/v1/x", content=b"done").status_code == 500
    assert [r["body"] for r in upstream.received] == ["done"]  # type: ignore[attr-defined]


def test_boto3_signatures_survive_and_faults_map_to_rotator_errors(moto: MotoEnv) -> None:
    """moto accepts signed calls through the proxy; injected 503/403 become rotator errors."""
    secret_id = f"mistral/contract/faultproxy-{uuid.uuid4().hex[:8]}"
    moto.admin_client().create_secret(Name=secret_id, SecretString='{"api_key": "x"}')
    with FaultProxy(moto.url, flavour="aws") as aws:
        api = Boto3SecretsManager.connect(
            region=AWS_REGION, endpoint_url=aws.url, timeout=2, session=moto.rotator.session()
        )
        assert api.describe(secret_id) is not None
        aws.fail(aws_call("GetSecretValue"), 503, count=2)
        with pytest.raises(TransientError, match="aws GetSecretValue"):
            api.get_value(secret_id)
        aws.fail(aws_call("PutSecretValue"), 403)
        with pytest.raises(AuthError, match="PutSecretValue"):
            api.put_value(secret_id, token="t" * 32, value=Secret("y"), stages=["AWSPENDING"])
        assert api.get_value(secret_id) is not None


def test_hvac_through_the_proxy(openbao: OpenBaoEnv) -> None:
    """OpenBao answers through the proxy; a 503 and a hang become TransientErrors."""
    path = f"mistral/contract/faultproxy-{uuid.uuid4().hex[:8]}"
    with FaultProxy(openbao.url, flavour="vault") as vault:
        api = HvacApi.connect(vault.url, timeout=1)
        api.use_token(Secret(openbao.rotator_token))
        api.write("secret", path, {"api_key": "x"}, cas=0)
        vault.fail(vault_data(path, "GET"), 503)
        with pytest.raises(TransientError, match="HTTP 503"):
            api.read_version("secret", path)
        vault.hang(vault_data(path, "GET"))
        with pytest.raises(TransientError, match="timed out"):
            api.read_version("secret", path)
        found = api.read_version("secret", path)
    assert found is not None
    assert found.version == 1
