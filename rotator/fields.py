"""Field types, secret-file reading and the base model of every configuration schema: the
sections of :mod:`rotator.config` and each store kind's."""

from __future__ import annotations

import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rotator.secret import Secret

# --------------------------------------------------------------------------------------------
# Field types. Their messages never repeat the rejected value: it may be a misplaced secret.
# --------------------------------------------------------------------------------------------

LOC_KEY = "rotator_loc"
"""Context key of a :class:`PydanticCustomError`: field names to append to the error's loc."""


def _field_error(message: str, *loc: str | int) -> PydanticCustomError:
    """A validation error whose field path is the validated object's plus ``loc``."""
    return PydanticCustomError("rotator", message, {LOC_KEY: loc})


def _to_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret(_text(value, strip=False))


SecretValue = Annotated[Secret, PlainValidator(_to_secret), PlainSerializer(str, return_type=str)]
"""A credential: validated from a non-empty string, printed and serialised as ``***``."""


def _text(value: object, *, strip: bool = True) -> str:
    if not isinstance(value, str):
        raise _field_error("must be a string")
    if not (value.strip() if strip else value):
        raise _field_error("must not be empty")
    return value


Text = Annotated[str, BeforeValidator(_text)]
"""A non-empty string."""


def _http_url(value: object) -> str:
    text = _text(value).strip()
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ValueError("must be an http:// or https:// URL with a host") from None
    if "@" in parts.netloc:  # the message never repeats the URL: it would show the password
        raise ValueError(
            "must not carry credentials (user:password@); give them in their own settings"
        )
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must be a base URL, without ?query or #fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return text.rstrip("/")


HttpUrl = Annotated[str, BeforeValidator(_http_url)]
"""An ``http(s)://host[:port][/path]`` base URL (no ``user:password@``), stored without a
trailing slash."""


def _uuid(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            pass
    raise ValueError("must be a UUID, like 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce")


UuidText = Annotated[str, BeforeValidator(_uuid)]
"""A UUID in canonical lowercase text form."""


def _url_path(value: object) -> str:
    text = _text(value).strip()
    if not text.startswith("/"):
        raise ValueError("must start with '/', like /v1/admin")
    return text.rstrip("/") or "/"


def _kv_path(value: object) -> str:
    text = _text(value).strip().strip("/")
    if not text:
        raise ValueError("must name a path, not only '/'")
    if any(part in {"", ".", ".."} for part in text.split("/")):
        raise ValueError("must not contain empty, '.' or '..' segments")
    return text


KvPath = Annotated[str, BeforeValidator(_kv_path)]
"""A Vault path or mount without leading or trailing slashes."""


def _listen(value: object) -> str:
    text = _text(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port with a port from 0 to 65535, like 127.0.0.1:9402")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("an IPv6 host needs brackets, like [::1]:9402")
    if host.startswith("[") != host.endswith("]") or host == "[]":
        raise ValueError("must be host:port, like 127.0.0.1:9402")
    return text


def _pattern(regex: str, message: str) -> Callable[[str], str]:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return check


TargetName = Annotated[
    str,
    BeforeValidator(_text),
    AfterValidator(
        _pattern(r"[a-z0-9-]{1,100}", "must be lowercase letters, digits and '-' (at most 100)")
    ),
]
KeyNamePrefix = Annotated[
    str,
    BeforeValidator(_text),
    AfterValidator(
        _pattern(r"[A-Za-z0-9-]{1,200}", "must be letters, digits and '-' (at most 200)")
    ),
]
STORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# --------------------------------------------------------------------------------------------
# The base model: unknown keys and ``<name>_file`` secrets are handled here, once.
# --------------------------------------------------------------------------------------------


MAX_SECRET_FILE_BYTES = 64 << 10
_NOT_REGULAR: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
"""O_NONBLOCK: opening a FIFO with no writer returns at once, so it can be refused (a blocking
open would hang until someone writes to it)."""


def _loose_permissions(status: os.stat_result) -> str | None:
    """Why a secret file's mode lets other users read it (like ssh's check), or None.

    Group access is fine when the group is rotator's own (Kubernetes' ``fsGroup``, a
    ``root:rotator 0640`` file); any access for others is not.
    """
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o007 or (mode & 0o070 and status.st_gid != os.getegid()):
        return (
            f"is open to other users (mode {mode:04o}); make it 0600, or 0640 with"
            " rotator's own group"
        )
    return None


def _read_regular(path: str, limit: int) -> tuple[bytes | None, os.stat_result]:
    """At most ``limit`` bytes of ``path`` (None unless it is a regular file) and its status,
    without blocking on a FIFO or reading a device."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return None, status
        chunks: list[bytes] = []
        while limit > 0 and (chunk := os.read(fd, limit)):
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks), status
    finally:
        os.close(fd)


def _read_secret_file(value: object, key: str, info: ValidationInfo) -> Secret:
    """Read a ``*_file`` secret: the content minus one trailing newline.

    Only a regular file is read (a FIFO or a device would block or never end), at most 64 KiB.
    One open to other users is refused with ``strict_permissions`` in the validation context,
    else noted in its ``loose`` list for a warning.

    Messages name the field, never the path: an operator who writes ``secret_id_file:
    ${VAULT_SECRET_ID}`` has put the secret itself where the path belongs.
    """
    if not isinstance(value, str) or not value.strip():
        raise _field_error("must be the path of a file holding the secret", key)
    named = f"the file named by {key}"
    context = info.context if isinstance(info.context, dict) else {}
    try:
        raw, status = _read_regular(value, MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise _field_error(
            f"cannot read {named}: {exc.strerror or type(exc).__name__}", key
        ) from None
    except ValueError:  # a NUL byte in the path
        raise _field_error(f"cannot read {named}: invalid path", key) from None
    if raw is None:
        kind = next((f"{k}, " for test, k in _NOT_REGULAR if test(status.st_mode)), "")
        raise _field_error(f"{named} is {kind}not a regular file", key)
    loose = _loose_permissions(status)
    if loose and context.get("strict_permissions"):
        raise _field_error(f"{named} {loose} (--strict-permissions)", key)
    if loose and isinstance(context.get("loose"), list):
        context["loose"].append((key, value, f"{named} {loose}"))
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise _field_error(f"{named} is larger than 64 KiB, which no credential is", key)
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _field_error(f"{named} is not UTF-8 text", key) from None
    if content.endswith("\r\n"):
        content = content[:-2]
    elif content.endswith("\n"):
        content = content[:-1]
    if not content:
        raise _field_error(f"{named} is empty", key)
    if isinstance(context.get("secrets"), list):
        context["secrets"].append(content)
    return Secret(content)


class _Model(BaseModel):
    """Frozen, unknown keys refused with the list of known ones, ``*_file`` secrets read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    _secret_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that may also be given as ``<field>_file``; exactly one of the two."""
    _hidden_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields that are not read from the input (set by the loader)."""

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data  # pydantic reports "must be a mapping" (or takes a model instance)
        data = dict(data)
        known = [name for name in cls.model_fields if name not in cls._hidden_fields]
        allowed = set(known) | {f"{name}_file" for name in cls._secret_fields}
        for key in data:
            if key in allowed:
                continue
            name = key if isinstance(key, str) else repr(key)
            raise _field_error(f"unknown key (known: {', '.join(_display(known, cls))})", name)
        for name in cls._secret_fields:
            file_key = f"{name}_file"
            if file_key in data:
                if name in data:
                    raise _field_error(f"give {name} or {file_key}, not both", file_key)
                data[name] = _read_secret_file(data.pop(file_key), file_key, info)
            elif name not in data and cls.model_fields[name].is_required():
                raise _field_error(f"required: give {name} or {file_key}", name)
        return cls._rewrite(data, info)

    @classmethod
    def _rewrite(cls, data: dict[Any, Any], _info: ValidationInfo) -> dict[Any, Any]:
        """Subclass hook: adjust the checked input mapping before field validation."""
        return data


def _display(known: list[str], cls: type[_Model]) -> Iterator[str]:
    for name in known:
        yield f"{name}|{name}_file" if name in cls._secret_fields else name
