"""docs/configuration.md documents every configuration key, and only keys that exist.

The reference names each key as a row, first cell its dotted path in backticks
(``| `mistral.admin_url` | …``), of a table whose header row starts ``| key |``. Paths are
built from the pydantic models of :mod:`rotator.config`: ``.field`` for a nested model,
``<name>`` for a mapping's keys, ``[]`` for a list's items, and ``(tag)`` after the segment that
holds one member of a tagged union (``stores.<name>(vault).url``). A secret field that may also
be given as a file adds ``<field>_file``; fields the loader sets itself (``Config.source``) are
not keys.

The third cell of a row is the default. Where it is a value (``required``, ``null``,
``all defaults``, or one backticked literal), it must be the model's default written the way the
configuration file writes it; prose (``—``, ``absent``, ``defaults.grace``, ``rotator-<name>``)
is not compared.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag
from pydantic.fields import FieldInfo

from rotator.config import Config, _Model
from rotator.durations import format_duration, parse_duration
from rotator.schedule import Schedule

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
_KEY_CELL = re.compile(r"^\|\s*`([^`]+)`\s*\|")


def _strip(annotation: Any) -> tuple[Any, Tag | None]:
    """The type inside ``Annotated[...]`` (recursively) and the union Tag found on the way."""
    tag: Tag | None = None
    while get_origin(annotation) is Annotated:
        found = [m for m in annotation.__metadata__ if isinstance(m, Tag)]
        if found:
            tag = found[0]
        annotation = get_args(annotation)[0]
    return annotation, tag


def _literal_tag(model: type[BaseModel]) -> str | None:
    """The value of a model's single-valued Literal field (``type: vault``), if it has one."""
    for field in model.model_fields.values():
        inner, _ = _strip(field.annotation)
        if get_origin(inner) is Literal and len(get_args(inner)) == 1:
            return str(get_args(inner)[0])
    return None


def _members(annotation: Any) -> list[tuple[type[BaseModel], str | None]]:
    """The models an annotation may hold, each with its union tag (None outside a union)."""
    inner, _ = _strip(annotation)
    if get_origin(inner) in (Union, types.UnionType):
        found: list[tuple[type[BaseModel], str | None]] = []
        models = []
        for arg in get_args(inner):
            member, tag = _strip(arg)
            if isinstance(member, type) and issubclass(member, BaseModel):
                models.append((member, tag))
        tagged = len(models) > 1
        for member, tag in models:
            label = (tag.tag if tag else _literal_tag(member)) if tagged else None
            found.append((member, label))
        return found
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return [(inner, None)]
    return []


def _collection(annotation: Any) -> tuple[str, Any] | None:
    """(``[]`` or ``.<name>``, item type) for a list/tuple/dict field, else None."""
    inner, _ = _strip(annotation)
    if get_origin(inner) in (Union, types.UnionType):  # X | None
        args = [a for a in get_args(inner) if a is not type(None)]
        if len(args) == 1:
            return _collection(args[0])
        return None
    origin = get_origin(inner)
    if origin in (list, tuple):
        return "[]", get_args(inner)[0]
    if origin is dict:
        return ".<name>", get_args(inner)[1]
    return None


def config_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo | None]:
    """Every key path a model accepts, recursively (see the module docstring), with its field
    (None for a ``<field>_file`` key)."""
    fields: dict[str, FieldInfo | None] = {}
    hidden: frozenset[str] = getattr(model, "_hidden_fields", frozenset())
    secret_fields: tuple[str, ...] = getattr(model, "_secret_fields", ())
    for name, field in model.model_fields.items():
        if name in hidden:
            continue
        path = f"{prefix}.{name}" if prefix else name
        fields[path] = field
        if name in secret_fields:
            fields[f"{path}_file"] = None
        holder, item = path, field.annotation
        container = _collection(field.annotation)
        if container is not None:
            holder, item = path + container[0], container[1]
        for member, tag in _members(item):
            fields |= config_fields(member, f"{holder}({tag})" if tag else holder)
    return fields


def config_paths(model: type[BaseModel]) -> set[str]:
    """Every key path a model accepts."""
    return set(config_fields(model))


def written_default(field: FieldInfo) -> str | None:
    """A field's default as the reference writes it, or None when it has no literal form."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Schedule):
        return f'"{value.text}"'
    if isinstance(value, BaseModel):
        return "all defaults"
    if isinstance(value, list | tuple) and not value:
        return "[]"
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, str | int | Path):
        return str(value)
    return None


def states(field: FieldInfo, stated: str) -> bool:
    """Whether ``stated`` is the field's default (durations compared as durations: 60s = 1m)."""
    value = None if field.is_required() else field.get_default(call_default_factory=True)
    if isinstance(value, timedelta):
        try:
            return parse_duration(stated, allow_zero=True) == value
        except ValueError:
            return False
    return written_default(field) == stated


def documented_default(cell: str) -> str | None:
    """The default a row's third cell states, or None when it is prose (not compared)."""
    cell = cell.strip()
    if cell.startswith("required"):
        return "required"
    if cell in {"null", "all defaults"}:
        return cell
    literal = re.fullmatch(r"`([^`]+)`", cell)
    if literal and not literal.group(1).startswith("defaults.") and "<" not in literal.group(1):
        return literal.group(1)
    return None


def key_rows(markdown: str) -> Iterator[tuple[str, list[str]]]:
    """(key path, cells) of each row of every table whose header starts ``| key |``; the path
    is the row's backticked first cell."""
    in_keys = False
    for line in markdown.splitlines():
        if not line.startswith("|"):
            in_keys = False
            continue
        if re.match(r"^\|\s*key\s*\|", line):
            in_keys = True
            continue
        key = _KEY_CELL.match(line)
        if in_keys and key:
            yield key.group(1), [cell.strip() for cell in line.strip().strip("|").split("|")]


def documented_defaults(markdown: str) -> dict[str, str]:
    """Key path -> the default its row states, for rows whose default is a value."""
    found: dict[str, str] = {}
    for path, cells in key_rows(markdown):
        default = documented_default(cells[2]) if len(cells) >= 3 else None
        if default is not None:
            found[path] = default
    return found


def default_problems(model: type[BaseModel], markdown: str) -> list[str]:
    """Rows whose stated default is not the model's default."""
    fields = config_fields(model)
    wrong = []
    for path, stated in sorted(documented_defaults(markdown).items()):
        field = fields.get(path)
        if field is None or not states(field, stated):
            actual = written_default(field) if field is not None else None
            wrong.append(f"{path}: documented {stated!r}, model has {actual!r}")
    return wrong


def documented_paths(markdown: str) -> set[str]:
    """The key paths of the rows of every table whose header starts ``| key |``."""
    return {path for path, _ in key_rows(markdown)}


def problems(model: type[BaseModel], markdown: str) -> list[str]:
    """Keys the document misses, and paths it names that the model does not accept."""
    wanted, written = config_paths(model), documented_paths(markdown)
    return [f"undocumented: {p}" for p in sorted(wanted - written)] + [
        f"documented but not a key: {p}" for p in sorted(written - wanted)
    ]


def test_every_configuration_key_is_documented_and_no_other() -> None:
    """docs/configuration.md has a row for each key of the Config models and none besides."""
    assert problems(Config, DOC.read_text(encoding="utf-8")) == []


def test_every_documented_default_is_the_models_default() -> None:
    """Each default the reference states as a value is the pydantic models' default."""
    markdown = DOC.read_text(encoding="utf-8")
    assert default_problems(Config, markdown) == []
    assert len(documented_defaults(markdown)) >= 60  # the comparison covers most rows


def test_a_changed_default_fails_until_the_reference_follows() -> None:
    """A default that differs from the model's is reported; prose defaults are not compared."""
    doc = (
        "| key | type | default | meaning |\n| --- | --- | --- | --- |\n"
        "| `token` | str | required | a secret |\n| `leaves` | list | `[]` | a list |\n"
        "| `leaves[].size` | int | `2` | a number |\n| `token_file` | path | — | file |\n"
    )
    assert default_problems(_Before, doc) == ["leaves[].size: documented '2', model has '1'"]
    assert default_problems(_Before, doc.replace("`2`", "`1`")) == []


def test_the_walk_reaches_nested_unions_lists_and_file_secrets() -> None:
    """The extractor sees through mappings, lists, tagged unions and ``*_file`` secrets."""
    paths = config_paths(Config)
    assert "stores.<name>(vault).auth(approle).secret_id_file" in paths
    assert "targets[].destinations[](aws_secrets_manager).tags" in paths
    assert "notifications.webhooks[].url_file" in paths
    assert "source" not in paths


class _Leaf(_Model):
    size: int = 1


class _Before(_Model):
    _secret_fields: ClassVar[tuple[str, ...]] = ("token",)

    token: str
    leaves: tuple[_Leaf, ...] = ()


class _After(_Before):
    added: bool = False


_THROWAWAY_DOC = """
| key | meaning |
| --- | --- |
| `token` | a secret |
| `token_file` | the secret, from a file |
| `leaves` | a list |
| `leaves[].size` | a number |
"""


def test_a_field_added_to_a_model_fails_until_it_is_documented() -> None:
    """A new field is reported as undocumented; a removed one as documented but not a key."""
    assert problems(_Before, _THROWAWAY_DOC) == []
    assert problems(_After, _THROWAWAY_DOC) == ["undocumented: added"]
    assert problems(_After, _THROWAWAY_DOC + "| `added` | new |\n") == []
    assert problems(_Before, _THROWAWAY_DOC + "| `gone` | old |\n") == [
        "documented but not a key: gone"
    ]
