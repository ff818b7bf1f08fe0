"""The narrow seam between rotator and boto3: only the Secrets Manager calls rotator makes.

:class:`SecretsManagerApi` lists them; :class:`Boto3SecretsManager` implements them with a boto3
client and translates every botocore failure into rotator's error tree, its text passed through
:func:`scrub_aws_error` first. Unit tests fake :class:`SecretsManagerApi`, never botocore.

Error mapping: connection failures, timeouts, throttling and 5xx → ``TransientError``; denied,
unknown or expired credentials → ``AuthError`` naming the secret and the action; a
``ClientRequestToken`` reused for other content → ``ConflictError``; anything else, including
an answer without the fields read → ``PermanentError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from rotator.contracts import OnCall
from rotator.destinations._common import observed, unexpected_failure
from rotator.errors import (
    AuthError,
    BackendError,
    ConflictError,
    PermanentError,
    TransientError,
)
from rotator.logs import scrub
from rotator.secret import Secret

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

T = TypeVar("T")

BACKEND = "aws"
CURRENT = "AWSCURRENT"
PENDING = "AWSPENDING"
PREVIOUS = "AWSPREVIOUS"

_THROTTLED = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_SERVER = frozenset({"InternalServiceError", "InternalFailure", "ServiceUnavailable"})
_DENIED = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredTokenException",
        "ExpiredToken",
    }
)

_XML_ERROR = re.compile(r"<Code>(?P<code>[^<]*)</Code>\s*<Message>(?P<message>[^<]*)</Message>")

_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Request ids: "RequestId: 1b2c…", "request id 1b2c…", "x-amzn-RequestId=…".
    (re.compile(r"(?i)(request[ _-]?id[\"']?\s*[:=]?\s*[\"']?)[A-Za-z0-9-]{8,}"), r"\1***"),
    # Account ids inside ARNs (arn:partition:service:region:ACCOUNT:resource).
    (re.compile(r"(arn:aws[a-z-]*:[a-z0-9-]*:[a-z0-9-]*:)\d{12}(?=:)"), r"\1***"),
    # Any other 12-digit account id standing alone.
    (re.compile(r"(?<!\d)\d{12}(?!\d)"), "***"),
    # Access key ids.
    (re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{12,}"), "***"),
    # SigV4 fragments and session tokens in echoed requests.
    (re.compile(r"(?i)(Credential=|Signature=|X-Amz-Security-Token[=:]\s*)[^\s,&\"']+"), r"\1***"),
    (re.compile(r"[A-Za-z0-9/+=]{100,}"), "***"),
)


def scrub_aws_error(text: str) -> str:
    """``text`` (an AWS error message) on one line without request ids, account ids, access key
    ids, signatures, session tokens, secret keys or any recently handled plaintext."""
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return " ".join(scrub(text).split())


@dataclass(frozen=True, slots=True)
class SecretDescription:
    """``DescribeSecret``: labels per version, deletion and rotation state, tags."""

    arn: str
    stages: Mapping[str, tuple[str, ...]]
    deleted: bool = False
    rotation_enabled: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    def holder(self, stage: str) -> str | None:
        """The version id carrying ``stage``, or None."""
        for version_id, labels in self.stages.items():
            if stage in labels:
                return version_id
        return None


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """``GetSecretValue``: one version's id, labels and ``SecretString`` (None if binary)."""

    version_id: str
    stages: tuple[str, ...]
    value: Secret | None = field(repr=False)


class SecretsManagerApi(Protocol):
    """The Secrets Manager calls rotator uses. Every method raises only rotator errors."""

    def describe(self, secret_id: str) -> SecretDescription | None:
        """``DescribeSecret``; None if the secret does not exist."""
        ...

    def get_value(self, secret_id: str, *, version_id: str | None = None) -> SecretVersion | None:
        """``GetSecretValue`` by version id, or plain (AWSCURRENT, as consumers read); None if
        there is no such secret or version."""
        ...

    def put_value(
        self, secret_id: str, *, token: str, value: Secret, stages: Sequence[str]
    ) -> SecretVersion:
        """``PutSecretValue`` with ``ClientRequestToken`` = ``token`` and these labels; the
        answer's version id and labels (``value`` None). ``ConflictError`` if the token already
        names a version with other content."""
        ...

    def move_stage(
        self, secret_id: str, stage: str, *, to: str | None, away_from: str | None
    ) -> None:
        """``UpdateSecretVersionStage``: attach ``stage`` to version ``to`` and/or remove it from
        version ``away_from`` (which must hold it: the compare-and-swap)."""
        ...

    def create(
        self,
        name: str,
        *,
        token: str,
        value: Secret,
        kms_key_id: str | None,
        tags: Mapping[str, str],
    ) -> str:
        """``CreateSecret`` with a first version (AWSCURRENT); returns its version id.
        ``ConflictError`` if a secret with this name already exists."""
        ...


def map_aws_error(exc: Exception, operation: str, secret_id: str) -> BackendError | ConflictError:
    """The rotator error for a botocore exception raised by ``operation`` on ``secret_id``."""
    where = f"{operation} {secret_id}"
    if isinstance(exc, botocore.exceptions.ClientError):
        return _map_client_error(exc, where, operation)
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return AuthError(BACKEND, where, "no AWS credentials found in the default chain")
    if isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.ConnectionClosedError,
    ):
        return TransientError(BACKEND, where, f"endpoint unreachable: {type(exc).__name__}")
    return PermanentError(BACKEND, where, scrub_aws_error(f"{type(exc).__name__}: {exc}"))


def _map_client_error(
    exc: botocore.exceptions.ClientError, where: str, operation: str
) -> BackendError | ConflictError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    # An XML error body where JSON was expected (some proxies, moto's IAM layer): unwrap it.
    xml = _XML_ERROR.search(message)
    if xml:
        code, message = xml.group("code"), xml.group("message")
    detail = f"{code}: {scrub_aws_error(message)}"
    if code in _DENIED or status in (401, 403):
        needs = f"needs secretsmanager:{operation}"
        return AuthError(BACKEND, where, f"denied: {needs} ({detail})", status=status)
    if code in _THROTTLED or code in _SERVER or (status is not None and status >= 500):
        return TransientError(BACKEND, where, detail, status=status)
    if code == "ResourceExistsException":
        return ConflictError(f"{BACKEND} {where}: {detail}")
    return PermanentError(BACKEND, where, detail, status=status)


class Boto3SecretsManager:
    """:class:`SecretsManagerApi` over a boto3 ``secretsmanager`` client (thread-safe); every call
    is reported to ``on_call`` (the metrics hook, :data:`rotator.contracts.OnCall`)."""

    def __init__(self, client: SecretsManagerClient, *, on_call: OnCall | None = None) -> None:
        self._client = client
        self._on_call = on_call

    @classmethod
    def connect(
        cls,
        *,
        region: str | None,
        endpoint_url: str | None = None,
        timeout: float = 10.0,
        session: boto3.session.Session | None = None,
        on_call: OnCall | None = None,
    ) -> Boto3SecretsManager:
        """A client for ``region`` (and ``endpoint_url``) with credentials from ``session``, by
        default the default AWS chain (environment, shared files, web identity, IMDS). boto3
        retries twice in its standard mode; rotator's own backoff does the rest."""
        config = botocore.config.Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "total_max_attempts": 2},
        )
        session = session or boto3.session.Session()
        client = session.client(
            "secretsmanager", region_name=region, endpoint_url=endpoint_url, config=config
        )
        return cls(client, on_call=on_call)

    def _call(self, operation: str, secret_id: str, fn: Callable[[], T]) -> T:
        """``fn()`` (the boto3 call and the reading of its answer), every failure mapped."""
        with observed(BACKEND, operation, secret_id, self._on_call):
            try:
                return fn()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise map_aws_error(exc, operation, secret_id) from None
            except Exception as exc:  # noqa: BLE001 - the seam lets no SDK exception through
                raise unexpected_failure(
                    BACKEND, operation, secret_id, exc, scrub_aws_error
                ) from None

    def describe(self, secret_id: str) -> SecretDescription | None:
        def describe() -> SecretDescription | None:
            try:
                answer = self._client.describe_secret(SecretId=secret_id)
            except self._client.exceptions.ResourceNotFoundException:
                return None
            stages = answer.get("VersionIdsToStages") or {}
            return SecretDescription(
                arn=answer.get("ARN", ""),
                stages={v: tuple(labels) for v, labels in stages.items()},
                deleted=answer.get("DeletedDate") is not None,
                rotation_enabled=bool(answer.get("RotationEnabled")),
                tags={t["Key"]: t["Value"] for t in answer.get("Tags") or [] if "Key" in t},
            )

        return self._call("DescribeSecret", secret_id, describe)

    def get_value(self, secret_id: str, *, version_id: str | None = None) -> SecretVersion | None:
        def get() -> SecretVersion | None:
            args: dict[str, Any] = {"SecretId": secret_id}
            if version_id is not None:
                args["VersionId"] = version_id
            try:
                answer = self._client.get_secret_value(**args)
            except self._client.exceptions.ResourceNotFoundException:
                return None
            text = answer.get("SecretString")
            return SecretVersion(
                version_id=answer["VersionId"],
                stages=tuple(answer.get("VersionStages") or ()),
                value=Secret(text) if text else None,
            )

        return self._call("GetSecretValue", secret_id, get)

    def put_value(
        self, secret_id: str, *, token: str, value: Secret, stages: Sequence[str]
    ) -> SecretVersion:
        def put() -> SecretVersion:
            answer = self._client.put_secret_value(
                SecretId=secret_id,
                ClientRequestToken=token,
                SecretString=value.reveal(),
                VersionStages=list(stages),
            )
            return SecretVersion(
                version_id=answer["VersionId"],
                stages=tuple(answer.get("VersionStages") or ()),
                value=None,
            )

        return self._call("PutSecretValue", secret_id, put)

    def move_stage(
        self, secret_id: str, stage: str, *, to: str | None, away_from: str | None
    ) -> None:
        args: dict[str, Any] = {"SecretId": secret_id, "VersionStage": stage}
        if to is not None:
            args["MoveToVersionId"] = to
        if away_from is not None:
            args["RemoveFromVersionId"] = away_from
        self._call(
            "UpdateSecretVersionStage",
            secret_id,
            lambda: self._client.update_secret_version_stage(**args),
        )

    def create(
        self,
        name: str,
        *,
        token: str,
        value: Secret,
        kms_key_id: str | None,
        tags: Mapping[str, str],
    ) -> str:
        args: dict[str, Any] = {
            "Name": name,
            "ClientRequestToken": token,
            "SecretString": value.reveal(),
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if kms_key_id:
            args["KmsKeyId"] = kms_key_id
        return self._call(
            "CreateSecret", name, lambda: str(self._client.create_secret(**args)["VersionId"])
        )
