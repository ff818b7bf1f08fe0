"""Loading: the file read with limits, YAML parsed, ``${NAME}`` expanded, models validated."""

from __future__ import annotations

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
        data = _parse_yaml(_read_text(source), source)
        return parse_config(data, source=source, env=environ, strict_permissions=strict_permissions)
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


def _parse_yaml(text: str, source: str) -> object:
    if _FastLoader is not None:
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
    """Copies a YAML document, replacing ``${NAME}``, ``${NAME:-default}`` and ``$$``."""

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
                return {key: self.expand(value, (*loc, key)) for key, value in node.items()}
            return [self.expand(value, (*loc, index)) for index, value in enumerate(node)]
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
