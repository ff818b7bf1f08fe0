"""Wording: field paths, and the one-line :class:`~rotator.errors.ConfigError` a pydantic
error becomes, scrubbed of secrets."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, Tag, ValidationError
from pydantic_core import ErrorDetails

from rotator.config.dburl import parse_database_url
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


# --------------------------------------------------------------------------------------------
# The schema walked along a field path: which loc parts are union tags, which fields are secrets
# --------------------------------------------------------------------------------------------


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside ``Annotated[...]`` (nested ones too) and the metadata found on the way."""
    metadata: list[Any] = []
    while get_origin(annotation) is Annotated:
        metadata += annotation.__metadata__
        annotation = get_args(annotation)[0]
    return annotation, metadata


def _union_members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``X | None`` included), else ``()``."""
    inner, _ = _strip(annotation)
    return get_args(inner) if get_origin(inner) in (Union, UnionType) else ()


def _tagged(annotation: Any) -> dict[object, Any]:
    """A tagged union's members by tag: a member's ``Tag``, else the value of its discriminator
    field's ``Literal`` (``{"vault": VaultStore, …}``); ``{}`` for any other annotation."""
    _, metadata = _strip(annotation)
    discriminator = next((m for m in metadata if isinstance(m, Discriminator)), None)
    if discriminator is None:
        return {}
    members: dict[object, Any] = {}
    for member in _union_members(annotation):
        model, meta = _strip(member)
        tags = [m.tag for m in meta if isinstance(m, Tag)]
        field = (
            model.model_fields.get(discriminator.discriminator)
            if isinstance(discriminator.discriminator, str) and _is_model(model)
            else None
        )
        if not tags and field is not None and get_origin(field.annotation) is Literal:
            tags = list(get_args(field.annotation))
        members |= dict.fromkeys(tags, member)
    return members


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _child(annotation: Any, part: int | str) -> Any:
    """The annotation of what ``part`` (a field name, a mapping key, an item index) leads to from
    ``annotation``; None when the walk cannot tell."""
    inner, _ = _strip(annotation)
    members = [m for m in _union_members(inner) if m is not type(None)]
    if len(members) == 1:  # X | None
        inner, _ = _strip(members[0])
    if _is_model(inner):
        field = inner.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not field.metadata:
            return field.annotation if field is not None else None
        return Annotated[(field.annotation, *field.metadata)]  # pydantic keeps them apart
    origin, args = get_origin(inner), get_args(inner)
    if origin is dict:
        return args[1]
    if origin in (tuple, list) and isinstance(part, int):
        return args[0]
    return None


def _clean_loc(loc: tuple[int | str, ...], root: type[BaseModel]) -> list[int | str]:
    """``loc`` without the union tags pydantic puts in it (``stores.x.vault.url`` ->
    ``stores.x.url``), found by walking the schema from ``root`` along it."""
    parts: list[int | str] = []
    current: Any = root
    for part in loc:
        if part == "[key]":
            continue
        members = _tagged(current) if current is not None else {}
        if part in members:
            current = members[part]
            continue
        parts.append(part)
        current = _child(current, part) if current is not None else None
    return parts


def _secret_values(node: object, annotation: Any) -> Iterator[object]:
    """What the raw document ``node`` gives for the secret fields (``_secret_fields``) of the
    models ``annotation`` may hold, at any depth (every member of a union is tried)."""
    inner, _ = _strip(annotation)
    origin, args = get_origin(inner), get_args(inner)
    if origin in (Union, UnionType):
        for member in args:
            yield from _secret_values(node, member)
    elif _is_model(inner) and isinstance(node, Mapping):
        yield from (node.get(name) for name in getattr(inner, "_secret_fields", ()))
        for name, field in inner.model_fields.items():
            if name in node:
                yield from _secret_values(node[name], field.annotation)
    elif origin is dict and isinstance(node, Mapping):
        for value in node.values():
            yield from _secret_values(value, args[1])
    elif origin in (tuple, list) and isinstance(node, list | tuple):
        for item in node:
            yield from _secret_values(item, args[0])


def listing(words: Iterable[str], conjunction: str = "and") -> str:
    """``a, b and c`` (or ``a, b or c``)."""
    items = list(words)
    return f" {conjunction} ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def _one_of(expected: object) -> str:
    """``'a', 'b', 'c'`` (pydantic's ``expected_tags``) as ``a, b or c``."""
    return listing(re.findall(r"'([^']*)'", str(expected)) or [str(expected)], "or")


def _describe(error: ErrorDetails, root: type[BaseModel]) -> tuple[list[int | str], str]:
    """Field path and plain-words problem of one pydantic error, built without its input."""
    loc = _clean_loc(error["loc"], root)
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
        return loc, f"must be {_one_of(ctx.get('expected_tags'))}"
    if kind in _PLAIN_MESSAGES:
        return loc, _PLAIN_MESSAGES[kind]
    if kind == "literal_error":
        return loc, f"must be {ctx.get('expected')}"
    if kind in {"greater_than_equal", "less_than_equal"}:
        bound = ctx.get("ge", ctx.get("le"))
        return loc, f"must be at {'least' if kind == 'greater_than_equal' else 'most'} {bound}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return loc, message[:1].lower() + message[1:]


def _secrets_in(data: Mapping[Any, Any], root: type[BaseModel]) -> list[str]:
    """The secret values given inline in a raw document of ``root`` (for scrubbing messages):
    its models' secret fields, and the password of ``state.url``."""
    found = list(_secret_values(data, root))
    state = data.get("state")
    url = state.get("url") if isinstance(state, Mapping) else None
    if isinstance(url, str):
        with contextlib.suppress(ValueError):  # an unparsable URL has no password to hide
            found.append(parse_database_url(url).password)
    return [value for value in found if isinstance(value, str)]


def _config_error(
    exc: ValidationError,
    source: str,
    data: Mapping[Any, Any],
    read: list[str],
    root: type[BaseModel],
) -> ConfigError:
    """The operator's one line for the first problem pydantic found validating ``data`` as
    ``root``, scrubbed of secrets."""
    loc, message = _describe(exc.errors(include_url=False, include_input=False)[0], root)
    for secret in sorted({*_secrets_in(data, root), *read}, key=len, reverse=True):
        if len(secret) >= _REDACT_MIN:
            message = message.replace(secret, MASK)
    return ConfigError(source, format_loc(tuple(loc)), _first_line(message))
