"""SDK failures become rotator errors (one line, scrubbed); AWS error text is scrubbed."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import hvac.exceptions
import pytest
import requests

from rotator.destinations.aws.api import map_aws_error, scrub_aws_error
from rotator.destinations.vault.api import map_hvac_error
from rotator.errors import AuthError, ConflictError, PermanentError, TransientError


def vault_error(cls: type[hvac.exceptions.VaultError], *errors: str) -> Exception:
    error: Exception = cls(
        "x", errors=list(errors), method="post", url="http://127.0.0.1:1/v1/secret/data/p"
    )
    return error


@pytest.mark.parametrize(
    ("exc", "expected", "status"),
    [
        (vault_error(hvac.exceptions.Forbidden, "permission denied"), AuthError, 403),
        (vault_error(hvac.exceptions.Unauthorized, "missing client token"), AuthError, 401),
        (vault_error(hvac.exceptions.RateLimitExceeded, "slow down"), TransientError, 429),
        (vault_error(hvac.exceptions.InternalServerError, "oops"), TransientError, 500),
        (vault_error(hvac.exceptions.VaultDown, "Vault is sealed"), TransientError, 503),
        (vault_error(hvac.exceptions.BadGateway, "bad gateway"), TransientError, 502),
        (vault_error(hvac.exceptions.InvalidRequest, "bad field"), PermanentError, 400),
        (vault_error(hvac.exceptions.InvalidPath), PermanentError, 404),
        (requests.exceptions.ConnectionError("refused"), TransientError, None),
        (requests.exceptions.ReadTimeout("slow"), TransientError, None),
        (requests.exceptions.SSLError("bad cert"), PermanentError, None),
    ],
)
def test_hvac_failures_map_to_the_error_tree(
    exc: Exception, expected: type[Exception], status: int | None
) -> None:
    """Each hvac/requests failure maps to one rotator error class with its HTTP status."""
    error = map_hvac_error(exc, "write", "secret/data/mistral/p")
    assert type(error) is expected
    assert getattr(error, "status", None) == status
    assert "secret/data/mistral/p" in str(error)
    assert "\n" not in str(error)


def test_vault_cas_mismatch_is_a_conflict() -> None:
    """KV v2's check-and-set refusal is a ConflictError, not a generic 400."""
    exc = vault_error(
        hvac.exceptions.InvalidRequest, "check-and-set parameter did not match the current version"
    )
    assert isinstance(map_hvac_error(exc, "write", "secret/data/p"), ConflictError)


def test_vault_denied_write_names_the_capability() -> None:
    """A 403 on a write says which capability the token needs."""
    error = map_hvac_error(vault_error(hvac.exceptions.Forbidden), "write", "secret/data/p")
    assert "needs 'update' (or 'create' for a new secret)" in str(error)


@pytest.mark.parametrize(
    ("operation", "path", "grant"),
    [
        ("lookup-self", "auth/token/lookup-self", "read"),
        ("renew-self", "auth/token/renew-self", "update"),
    ],
)
def test_denied_token_self_call_says_the_token_may_be_invalid(
    operation: str, path: str, grant: str
) -> None:
    """A 403 on the token's own endpoints says the token may be invalid or expired: Vault
    answers an unknown token there exactly as it answers a missing grant."""
    error = map_hvac_error(vault_error(hvac.exceptions.Forbidden), operation, path)
    assert str(error) == (
        f"vault {operation} {path}: token invalid or expired, or lacks {grant} on {path} (HTTP 403)"
    )


def test_refused_login_is_an_auth_error() -> None:
    """A 400 on login (bad role_id/secret_id) is an AuthError."""
    exc = vault_error(hvac.exceptions.InvalidRequest, "invalid role or secret ID")
    assert isinstance(map_hvac_error(exc, "login", "auth/approle/login"), AuthError)


def client_error(code: str, message: str, status: int) -> botocore.exceptions.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "r-1"},
    }
    return botocore.exceptions.ClientError(response, "PutSecretValue")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (client_error("AccessDeniedException", "not authorized", 400), AuthError),
        (client_error("UnrecognizedClientException", "bad token", 400), AuthError),
        (client_error("ExpiredTokenException", "expired", 400), AuthError),
        (client_error("Whatever", "forbidden", 403), AuthError),
        (client_error("ThrottlingException", "rate exceeded", 400), TransientError),
        (client_error("InternalServiceError", "oops", 500), TransientError),
        (client_error("ServiceUnavailable", "busy", 503), TransientError),
        (client_error("ResourceExistsException", "token in use", 400), ConflictError),
        (client_error("InvalidParameterException", "bad", 400), PermanentError),
        (client_error("InvalidRequestException", "marked deleted", 400), PermanentError),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), TransientError),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), TransientError),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"), TransientError),
        (botocore.exceptions.NoCredentialsError(), AuthError),
    ],
)
def test_botocore_failures_map_to_the_error_tree(exc: Exception, expected: type[Exception]) -> None:
    """Each botocore failure maps to one rotator error class naming the secret."""
    error = map_aws_error(exc, "PutSecretValue", "mistral/prod")
    assert type(error) is expected
    assert "mistral/prod" in str(error)


def test_denied_aws_call_names_the_action() -> None:
    """An AWS denial says which IAM action is missing."""
    error = map_aws_error(
        client_error("AccessDeniedException", "no", 400), "UpdateSecretVersionStage", "s"
    )
    assert "needs secretsmanager:UpdateSecretVersionStage" in str(error)


def test_xml_error_body_is_unwrapped() -> None:
    """An XML error where JSON was expected still yields its code and message."""
    body = (
        '<?xml version="1.0"?><ErrorResponse><Errors><Error><Code>AccessDenied</Code>'
        "<Message>User: arn:aws:iam::123456789012:user/r is not authorized</Message>"
        "</Error></Errors></ErrorResponse>"
    )
    error = map_aws_error(client_error("403", body, 403), "GetSecretValue", "s")
    assert isinstance(error, AuthError)
    assert "AccessDenied: User: arn:aws:iam::***:user/r is not authorized" in str(error)
    assert "<" not in str(error)


def test_scrub_removes_request_ids_accounts_and_credentials() -> None:
    """Request ids, account ids, access key ids, signatures and tokens never survive."""
    text = (
        "User: arn:aws:sts::123456789012:assumed-role/r/s is not authorized on "
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mistral/prod-AbC123\n"
        "RequestId: 7e0bd1f0-1c2b-4b8e-9f8a-1234567890ab key AKIAIOSFODNN7EXAMPLE "
        "Credential=AKIAIOSFODNN7EXAMPLE/20260101/eu-west-1/secretsmanager/aws4_request, "
        "Signature=0123456789abcdef0123456789abcdef X-Amz-Security-Token=" + "Q" * 200
    )
    clean = scrub_aws_error(text)
    for leaked in ("123456789012", "7e0bd1f0", "AKIAIOSFODNN7EXAMPLE", "0123456789abcdef", "QQQQ"):
        assert leaked not in clean
    assert "secret:mistral/prod-AbC123" in clean
    assert "\n" not in clean


def test_scrub_removes_a_recently_wrapped_plaintext() -> None:
    """A key that ever travelled in a Secret is masked if an AWS message echoes it."""
    from rotator.secret import Secret

    key = Secret("EchoedKeyZZZZZZZZZZZZZZZZZZZZZZZ")
    assert key.reveal() not in scrub_aws_error(f"invalid value {key.reveal()} given")
