"""Loading: the file read with limits, YAML parsed, ``${NAME}`` expanded, models validated."""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import ValidationError

from rotator.config.model import Config
from rotator.config.wording import _config_error, _first_line, format_loc
from rotator.errors import ConfigError
from rotator.fields import _listen

log = structlog.get_logger("rotator.config")
"""Named as before the split, so its records read as they did."""


# --------------------------------------------------------------------------------------------
# Loading: file -> YAML -> ${NAME} expansion -> models, every failure one ConfigError line
# --------------------------------------------------------------------------------------------

CONFIG_ENV = "ROTATOR_CONFIG"
RELOAD_TIMEOUT_S = 30.0
"""How long the daemon waits for a reload's :func:`load_config` (the file and its secrets are
small: a longer load is stuck, e.g. on a FIFO given as the configuration file)."""
"""The environment variable naming the configuration file when no path is given."""
MAX_FILE_BYTES = 16 << 20
"""A fleet of 10 000 targets takes about 2 MiB; the bound stops a wrong file, not a big fleet."""
MAX_VALUES = 1_000_000
"""Values after alias expansion (a YAML alias bomb); 10 000 targets hold about 120 000."""
MAX_DEPTH = 32
_VAR = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    env: Mapping[str, str] | None = None,
    strict_permissions: bool = False,
) -> Config:
    """Read, expand and validate a configuration file.

    ``path=None`` uses ``$ROTATOR_CONFIG`` from ``env`` (default: ``os.environ``), which also
    supplies ``${NAME}`` values. Raises :class:`~rotator.errors.ConfigError` and nothing else,
    for any input: ``str()`` is one line, ``<file as given>: <field.path>: <problem>``, with no
    secret in it. Reads the file and any ``*_file`` secrets; changes nothing.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        given = environ.get(CONFIG_ENV)
        if not given:
            raise ConfigError(
                "rotator", "", f"no configuration file: pass --config PATH or set {CONFIG_ENV}"
            )
        path = given
    source = os.fsdecode(path)
    try:
        with _collector_paused():
            data = _parse_yaml(_read_text(source), source)
            return parse_config(
                data, source=source, env=environ, strict_permissions=strict_permissions
            )
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: only ConfigError leaves here
        raise ConfigError(
            source, "", f"could not be loaded ({type(exc).__name__}); please report this bug"
        ) from None


def parse_config(
    data: object,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    strict_permissions: bool = False,
) -> Config:
    """Validate an already-parsed document (what ``yaml.safe_load`` returns) into a Config.

    Same expansion, checks and errors as :func:`load_config`; ``source`` names the document in
    messages and becomes ``Config.source``. A ``*_file`` secret open to other users is a
    ``secret_file_permissions`` warning (logged once per field), or with ``strict_permissions``
    an error.
    """
    if data is None:
        raise ConfigError(source, "", "the file is empty; it needs at least a mistral: section")
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, "", f"the top level must be a mapping of settings, not {_kind(data)}"
        )
    expanded = _Expander(os.environ if env is None else env, source).expand(data, ())
    assert isinstance(expanded, dict)
    read_secrets: list[str] = []
    loose: list[tuple[str, str, str]] = []
    context = {
        "source": source,
        "secrets": read_secrets,
        "loose": loose,
        "strict_permissions": strict_permissions,
    }
    try:
        config = Config.model_validate(expanded, context=context)
    except ValidationError as exc:
        failure = _config_error(exc, source, expanded, read_secrets, Config)
    else:
        for key, path, problem in dict.fromkeys(loose):  # a file named twice: one warning
            for loc in _file_keys(expanded, key, path, ()):
                log.warning("secret_file_permissions", config=source, field=loc, problem=problem)
        return config
    # Raised outside the handler: the ValidationError (which holds input values) is not chained.
    raise failure


def read_listen(source: str, env: Mapping[str, str]) -> str | None:
    """``server.listen`` of the configuration file ``source``, read alone: the YAML parsed and
    only that field expanded and validated (no ``*_file`` secret is read, nothing else is
    checked), so a file that would not load as a whole still tells where the daemon listens.
    None when the file does not set it. Raises :class:`ConfigError` like :func:`load_config`."""
    document = _parse_yaml(_read_text(source), source)
    server = document.get("server") if isinstance(document, dict) else None
    raw = server.get("listen") if isinstance(server, dict) else None
    if raw is None:
        return None
    expanded = _Expander(env, source).expand(raw, ("server", "listen"))
    try:
        return _listen(expanded)
    except ValueError as exc:
        raise ConfigError(source, "server.listen", str(exc)) from None


def _read_text(source: str) -> str:
    try:
        with Path(source).open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            source, "", f"cannot read file: {exc.strerror or type(exc).__name__}"
        ) from None
    except ValueError:  # e.g. a NUL byte in the path
        raise ConfigError(source, "", "cannot read file: invalid path") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(source, "", f"the file is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text (byte {exc.start})") from None


class _NoDuplicateKeys(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor, except that a key repeated in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: PyYAML reports it below
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


class _StrictLoader(yaml.SafeLoader, _NoDuplicateKeys):
    """The pure-Python safe loader, refusing duplicate keys; its errors name the culprit."""


_FastLoader: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _FastLoader(yaml.CSafeLoader, _NoDuplicateKeys):  # type: ignore[no-redef]
        """libyaml's parser (about ten times faster on a large fleet's file), same safe
        constructor. A document it refuses is read again by :class:`_StrictLoader`, whose
        messages are the ones shown."""


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a file is parsed and validated (then restored as it
    was). A large fleet's document is hundreds of thousands of new containers and none of them
    is garbage yet: each collection would walk them all for nothing. With 10 000 targets that
    was 2 of the 3 CPU seconds of a load. What is freed meanwhile is freed by reference
    counting as usual; a cycle waits for the next collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Unsupported(Exception):  # noqa: N818 - a signal, not an error shown to anyone
    """:func:`_read_events` met what it leaves to PyYAML's constructor."""


_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp")
)
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAGS = (None, "tag:yaml.org,2002:map")
_SEQ_TAGS = (None, "tag:yaml.org,2002:seq")
_EVENTS_MAX_DEPTH = 100
"""Deeper documents go to PyYAML's constructor, whose words (``nested too deeply``) are the
ones shown for them."""


def _read_events(text: str) -> object:
    """The document of ``text``, built straight from libyaml's events: what
    ``yaml.load(text, Loader=_FastLoader)`` returns, without its node tree.

    The node tree (a node and two marks per value, 85 MB for 10 000 targets) cost as much time
    as the parse, and once freed it left the heap fragmented by the values built meanwhile:
    the daemon kept that memory. Here each event is dropped as soon as it is read, and equal
    strings (keys, store names, fields: most of a fleet's file) are one object. Anything
    but plain mappings, sequences and the core scalar types (an explicit or unknown tag, a merge
    key ``<<``, a duplicate or unhashable key, a duplicate or unknown anchor, more than one
    document, very deep nesting) raises :class:`_Unsupported`, and PyYAML's loaders read the
    text instead; so do syntax errors (:class:`yaml.YAMLError`)."""
    assert _FastLoader is not None
    loader = _FastLoader(text)
    try:
        return _EventReader(loader).document()
    finally:
        loader.dispose()


_NO_KEY: Any = object()
"""The pending key of a mapping that waits for its next key."""


class _EventReader:
    """:func:`_read_events`'s state: the anchors, and the open collections, innermost last,
    each with its mapping's pending key."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._anchors: dict[str, object] = {}
        self._open: list[list[Any]] = []
        self._root: object = None
        self._strings: dict[str, str] = {}
        self._plain: dict[str, object] = {}  # an untagged plain scalar's text -> its value
        # Without path resolvers (none are registered) an untagged quoted scalar is a string.
        self._quoted_are_strings = not loader.yaml_path_resolvers

    def document(self) -> object:
        get = self._loader.get_event
        get()  # StreamStartEvent
        if isinstance(get(), yaml.StreamEndEvent):
            return None  # an empty stream, or comments only
        get_value, add = self._value, self._add
        while True:
            event = get()
            if isinstance(event, yaml.DocumentEndEvent):
                if not isinstance(get(), yaml.StreamEndEvent):
                    raise _Unsupported("more than one document")
                return self._root
            value = get_value(event)
            if value is not _NO_KEY:
                add(value)

    def _value(self, event: Any) -> object:
        """The value an event completes, or ``_NO_KEY`` when it opens a collection."""
        cls = type(event)
        if cls is yaml.ScalarEvent:
            value = self._scalar(event)
            self._anchor(event.anchor, value)
            return value
        if cls is yaml.AliasEvent:
            if event.anchor not in self._anchors:
                raise _Unsupported("unknown anchor")
            return self._anchors[event.anchor]
        if cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
            return self._open.pop()[0]
        mapping = cls is yaml.MappingStartEvent
        if event.tag not in (_MAP_TAGS if mapping else _SEQ_TAGS):
            raise _Unsupported(event.tag)
        if len(self._open) >= _EVENTS_MAX_DEPTH:
            raise _Unsupported("deep")
        top = self._open[-1] if self._open else None
        if top is not None and type(top[0]) is dict and top[1] is _NO_KEY:
            raise _Unsupported("a collection as a key")
        container: dict[Any, Any] | list[Any] = {} if mapping else []
        self._anchor(event.anchor, container)
        self._open.append([container, _NO_KEY])
        return _NO_KEY

    def _scalar(self, event: Any) -> object:
        """A scalar's value; an untagged one's resolved once per distinct text (a fleet's file
        repeats most of its keys and values)."""
        text, tag = event.value, event.tag
        untagged = tag is None or tag == "!"
        if untagged and event.implicit[0]:
            known = self._plain.get(text, _NO_KEY)
            if known is not _NO_KEY:
                return known
        elif untagged and self._quoted_are_strings:
            return self._strings.setdefault(text, text)
        if untagged:
            tag = self._loader.resolve(yaml.ScalarNode, text, event.implicit)
        if tag == _STR_TAG:
            value: object = self._strings.setdefault(text, text)
        elif tag in _PLAIN_TAGS:
            value = self._loader.yaml_constructors[tag](self._loader, yaml.ScalarNode(tag, text))
        else:
            raise _Unsupported(tag)
        if untagged and event.implicit[0]:
            self._plain[text] = value
        return value

    def _add(self, value: object) -> None:
        """Put a completed value where it belongs: in the open collection, or at the root."""
        if not self._open:
            self._root = value
            return
        top = self._open[-1]
        parent = top[0]
        if type(parent) is list:
            parent.append(value)
        elif top[1] is _NO_KEY:
            if value.__hash__ is None or value in parent:
                raise _Unsupported("an unhashable or duplicate key")
            top[1] = value
        else:
            parent[top[1]] = value
            top[1] = _NO_KEY

    def _anchor(self, name: str | None, value: object) -> None:
        if name is None:
            return
        if name in self._anchors:
            raise _Unsupported("duplicate anchor")
        self._anchors[name] = value


def _parse_yaml(text: str, source: str) -> object:
    if _FastLoader is not None:
        try:
            return _read_events(text)
        except (_Unsupported, yaml.YAMLError, RecursionError, ValueError, OverflowError):
            pass  # one of PyYAML's loaders reads it below
        try:
            return yaml.load(text, Loader=_FastLoader)  # noqa: S506 - a CSafeLoader subclass
        except (yaml.YAMLError, RecursionError, ValueError, OverflowError):
            pass  # reported below, in the pure-Python parser's words
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and problem.startswith("but "):  # "expected …, but found …"
            problem = f"{exc.context}, {problem}"
        raise ConfigError(source, "", f"{where}{_first_line(problem)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {_first_line(str(exc))}") from None
    except RecursionError:
        raise ConfigError(source, "", "the YAML is nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # PyYAML building e.g. a date 2001-02-30
        raise ConfigError(source, "", f"invalid YAML value: {_first_line(str(exc))}") from None


def _kind(value: object) -> str:
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _file_keys(node: object, key: str, path: str, loc: tuple[object, ...]) -> Iterator[str]:
    """The field paths in ``node`` where ``key`` is set to ``path``."""
    if isinstance(node, Mapping):
        if node.get(key) == path:
            yield format_loc((*loc, key))
        for name, value in node.items():
            yield from _file_keys(value, key, path, (*loc, name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _file_keys(value, key, path, (*loc, index))


class _Expander:
    """Copies a YAML document, replacing ``${NAME}``, ``${NAME:-default}`` and ``$$``. A dict or
    list in which nothing was replaced is returned itself, not a copy (a large fleet's document
    is not held twice); other mappings still come out as dicts and tuples as lists."""

    def __init__(self, env: Mapping[str, str], source: str) -> None:
        self._env = env
        self._source = source
        self._count = 0
        self._open: set[int] = set()

    def _fail(self, loc: tuple[object, ...], problem: str) -> ConfigError:
        return ConfigError(self._source, format_loc(loc), problem)

    def expand(self, node: object, loc: tuple[object, ...]) -> object:
        self._count += 1
        if self._count > MAX_VALUES:
            raise self._fail(loc, f"the document has more than {MAX_VALUES} values")
        if len(loc) > MAX_DEPTH:
            raise self._fail(loc, "nested too deeply")
        if isinstance(node, str):
            return self._string(node, loc)
        if not isinstance(node, Mapping | list | tuple):
            return node
        if id(node) in self._open:
            raise self._fail(loc, "contains itself (a recursive YAML alias)")
        self._open.add(id(node))
        try:
            if isinstance(node, Mapping):
                mapping = {key: self.expand(value, (*loc, key)) for key, value in node.items()}
                if type(node) is dict and all(mapping[k] is v for k, v in node.items()):
                    return node  # nothing expanded below: no second copy of a large fleet
                return mapping
            items = [self.expand(value, (*loc, index)) for index, value in enumerate(node)]
            if type(node) is list and all(a is b for a, b in zip(items, node, strict=True)):
                return node
            return items
        finally:
            self._open.discard(id(node))

    def _string(self, text: str, loc: tuple[object, ...]) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(1):
                return "$"
            body = match.group(2)
            if body is None:
                raise self._fail(loc, "unterminated '${' (write $$ for a literal $)")
            name, has_default, default = body.partition(":-")
            if not _VAR_NAME.fullmatch(name):
                raise self._fail(
                    loc,
                    "'${...}' must hold a variable name, like ${MISTRAL_ADMIN_KEY} or"
                    " ${NAME:-default} (write $$ for a literal $)",
                )
            value = self._env.get(name)
            if value is None or (has_default and not value):
                if not has_default:
                    raise self._fail(loc, f"environment variable {name} is not set")
                return default
            return value

        return _VAR.sub(substitute, text) if "$" in text else text
