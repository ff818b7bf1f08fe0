"""Wording: field paths, and the one-line :class:`~rotator.errors.ConfigError` a pydantic
error becomes, scrubbed of secrets."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from rotator.config.stores import _UNKNOWN_STORE
from rotator.errors import ConfigError
from rotator.fields import LOC_KEY
from rotator.secret import MASK

# --------------------------------------------------------------------------------------------
# Wording: pydantic errors -> one ConfigError line, never a secret in it
# --------------------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_REDACT_MIN = 4  # shorter "secrets" would blank out ordinary words


def format_loc(loc: tuple[object, ...]) -> str:
    """A field path in ``a.b[1].c`` form (odd keys quoted: ``tags["a b"]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def _first_line(text: str) -> str:
    """The first line of ``text`` with its whitespace collapsed (``invalid`` if it is blank)."""
    return " ".join(text.splitlines()[0].split()) if text.strip() else "invalid"


_STORE_TAGS = frozenset({"vault", "aws_secrets_manager"})
_AUTH_TAGS = frozenset({"token", "approle", "kubernetes"})
_DESTINATION_TAGS = _STORE_TAGS | {_UNKNOWN_STORE}
_DISCRIMINATORS = {"type": "vault or aws_secrets_manager", "method": "token, approle or kubernetes"}
_PLAIN_MESSAGES = {
    "missing": "missing (required)",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "mapping_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "too_short": "must not be empty",
    "path_type": "must be a file path",
    "recursion_loop": "contains itself (a recursive YAML alias)",
    "extra_forbidden": "unknown key",
}


def _clean_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    """Drop the union tags pydantic puts in a loc (``stores.x.vault.url`` -> ``stores.x.url``)."""
    parts = [part for part in loc if part != "[key]"]
    if len(parts) > 2 and parts[0] == "stores" and parts[2] in _STORE_TAGS:
        del parts[2]
        if len(parts) > 3 and parts[2] == "auth" and parts[3] in _AUTH_TAGS:
            del parts[3]
    if (
        len(parts) > 4
        and parts[0] == "targets"
        and parts[2] == "destinations"
        and parts[4] in _DESTINATION_TAGS
    ):
        del parts[4]
    return parts


def _describe(error: ErrorDetails) -> tuple[list[int | str], str]:
    """Field path and plain-words problem of one pydantic error, built without its input."""
    loc = _clean_loc(error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    extra = ctx.get(LOC_KEY)
    if isinstance(extra, tuple):
        loc.extend(extra)
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        field_name = str(ctx.get("discriminator", "")).strip("'\"")
        loc.append(field_name)
        if kind == "union_tag_not_found":
            return loc, "missing (required)"
        return loc, f"must be {_DISCRIMINATORS.get(field_name, ctx.get('expected_tags'))}"
    if kind in _PLAIN_MESSAGES:
        return loc, _PLAIN_MESSAGES[kind]
    if kind == "literal_error":
        return loc, f"must be {ctx.get('expected')}"
    if kind in {"greater_than_equal", "less_than_equal"}:
        bound = ctx.get("ge", ctx.get("le"))
        return loc, f"must be at {'least' if kind == 'greater_than_equal' else 'most'} {bound}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return loc, message[:1].lower() + message[1:]


def _secrets_in(data: Mapping[Any, Any]) -> list[str]:
    """The secret values given inline in a raw document (for scrubbing messages)."""

    def at(node: object, *keys: str) -> object:
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    found = [
        at(data, "mistral", "admin_key"),
        at(data, "server", "admin_token"),
        at(data, "audit", "hmac_key"),
    ]
    stores = at(data, "stores")
    if isinstance(stores, Mapping):
        for store in stores.values():
            found += [at(store, "auth", "token"), at(store, "auth", "secret_id")]
    url = at(data, "state", "url")
    if isinstance(url, str):
        from sqlalchemy.engine import make_url

        with contextlib.suppress(Exception):  # an unparsable URL has no password to hide
            found.append(make_url(url).password)
    return [value for value in found if isinstance(value, str)]


def _config_error(
    exc: ValidationError, source: str, data: Mapping[Any, Any], read: list[str]
) -> ConfigError:
    """The operator's one line for the first problem pydantic found, scrubbed of secrets."""
    loc, message = _describe(exc.errors(include_url=False, include_input=False)[0])
    for secret in sorted({*_secrets_in(data), *read}, key=len, reverse=True):
        if len(secret) >= _REDACT_MIN:
            message = message.replace(secret, MASK)
    return ConfigError(source, format_loc(tuple(loc)), _first_line(message))
