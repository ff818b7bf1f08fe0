"""Logging: structlog everywhere, JSON in production, console on a TTY, and redaction in depth.

Layers that keep a plaintext key out of every log line
(docs/security.md#what-never-leaks-plaintext-keys):

1. :class:`rotator.secret.Secret` renders as ``***`` wherever it is formatted.
2. :func:`redact` masks values under secret-sounding key names (``api_key``, ``token`` …).
3. :func:`scrub` masks, in every string of the event (tracebacks included), any plaintext wrapped
   recently in this process and anything shaped like a Mistral key, a bearer token or a Vault
   token.
4. Tracebacks are rendered with ``show_locals=False``: structlog's default JSON and rich
   tracebacks include every frame's local variables, which would carry keys passed as arguments.

Standard-library loggers (APScheduler, httpx, botocore, hvac, uvicorn) go through the same chain
via ``ProcessorFormatter``; chatty HTTP loggers are held at WARNING (httpx logs URLs at INFO).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from rotator.secret import MASK, Secret, recent_marker, recent_plaintexts

LogFormat = Literal["auto", "json", "console"]

_DENY_KEYS = re.compile(
    r"(^|_)(api_?key|admin_?key|key_value|plaintext|token|secret|secret_id|password|"
    r"authorization|x-api-key|credentials?|jwt|aws_secret_access_key|session_token)$",
    re.IGNORECASE,
)
# Keys that merely look secret but carry safe, useful facts.
_ALLOW_KEYS = frozenset({"key_id", "key_ids", "key_name", "fingerprint", "secret_id_path"})

# Each pattern's group 1, when present, is a prefix kept in front of the mask.
_PATTERNS = (
    # A Mistral key: 32 letters and digits standing alone.
    re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?![A-Za-z0-9])"),
    # Bearer / x-api-key header values.
    re.compile(r"(?i)(bearer\s+|x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"),
    # Vault/OpenBao tokens (hvs., hvb., s., b.).
    re.compile(r"(?<![A-Za-z0-9])(?:hv[sb]|s|b)\.[A-Za-z0-9_-]{20,}"),
    # AWS secret access keys.
    re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
)

DECIMALS = 3
"""Floats in log events are durations in seconds: they are rendered to the millisecond, here
once, so no call site rounds (or forgets to)."""

_QUIET_LOGGERS = ("httpx", "httpcore", "botocore", "boto3", "urllib3", "hvac", "uvicorn.access")


def scrub(text: str) -> str:
    """Mask recent plaintexts and anything shaped like a key or token in ``text``."""
    if _may_hold_a_recent_plaintext(text):
        for value in recent_plaintexts():
            if value in text:
                text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(_mask_match, text)
    return text


_PROBE = 8
"""Length of the prefix recent plaintexts are indexed by (``Secret`` records none shorter)."""


class _RecentIndex:
    """What tells quickly that a text holds none of the recent plaintexts: a pattern matching
    any run of their characters as long as the shortest of them (no such run, no plaintext),
    then their first :data:`_PROBE` characters, looked up at each position of the run.

    An index is never changed once published: :meth:`extended` returns a new one holding the
    plaintexts added since, so most changes cost a lookup per new plaintext, not a rebuild."""

    def __init__(
        self,
        known: frozenset[str] = frozenset(),
        prefixes: dict[str, tuple[str, ...]] | None = None,
        chars: frozenset[str] = frozenset(),
        shortest: int = 0,
        runs: re.Pattern[str] | None = None,
    ) -> None:
        self.known = known
        self.prefixes = prefixes if prefixes is not None else {}
        self.chars = chars
        self.shortest = shortest
        self.runs = runs

    def extended(self, plaintexts: tuple[str, ...]) -> _RecentIndex:
        """This index plus every plaintext of ``plaintexts`` it lacks (itself when none)."""
        new = [value for value in plaintexts if value not in self.known]
        if not new:
            return self
        prefixes = dict(self.prefixes)
        for value in new:
            prefixes[value[:_PROBE]] = (*prefixes.get(value[:_PROBE], ()), value)
        chars = self.chars.union(*new)
        lengths = [len(v) for v in new] + ([self.shortest] if self.known else [])
        shortest = min(lengths)
        runs = self.runs
        if chars != self.chars or shortest != self.shortest:
            runs = re.compile(f"[{re.escape(''.join(sorted(chars)))}]{{{shortest},}}")
        return _RecentIndex(self.known.union(new), prefixes, chars, shortest, runs)

    def may_hold_one(self, text: str) -> bool:
        if self.runs is None:
            return False
        for run in self.runs.finditer(text):
            piece = run.group()
            for start in range(len(piece) - _PROBE + 1):
                found = self.prefixes.get(piece[start : start + _PROBE])
                if found is not None and any(piece.startswith(v, start) for v in found):
                    return True
        return False


_STALE = 4
"""An index holding more than this many times the plaintexts recent now is rebuilt afresh."""

_index: tuple[tuple[int, int], _RecentIndex] = ((0, 0), _RecentIndex())


def _may_hold_a_recent_plaintext(text: str) -> bool:
    """False only if no recent plaintext occurs in ``text``: :class:`_RecentIndex`, extended when
    the plaintexts change, instead of searching ``text`` for each of up to 512 of them on every
    logged value. The index may hold plaintexts gone from the recent ones since (up to
    :data:`_STALE` times as many), never miss one.
    """
    global _index  # noqa: PLW0603 - one cache, replaced whole (atomic for other threads)
    marker, index = _index
    now = recent_marker()
    if now != marker:
        recent = recent_plaintexts()
        if any(len(value) < _PROBE for value in recent):
            return True  # cannot be indexed: search for every plaintext
        if len(index.known) > _STALE * max(len(recent), 1):
            index = _RecentIndex()
        index = index.extended(recent)
        _index = (now, index)
    return index.may_hold_one(text)


def _mask_match(match: re.Match[str]) -> str:
    return (match.group(1) if match.re.groups else "") + MASK


def _clean(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: (MASK if _is_secret_key(k) else _clean(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return round(value, DECIMALS) if isinstance(value, float) else value
    return scrub(repr(value) if isinstance(value, BaseException) else str(value))


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key not in _ALLOW_KEYS and bool(_DENY_KEYS.search(key))


def redact(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: deny-listed keys masked, every other value scrubbed recursively,
    floats rounded to :data:`DECIMALS` places."""
    out: MutableMapping[str, Any] = {}
    for key, value in event_dict.items():
        out[key] = MASK if _is_secret_key(key) else _clean(value)
    return dict(out)


def _renderer(fmt: LogFormat, stream: TextIO) -> Processor:
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    return structlog.processors.JSONRenderer(sort_keys=False)


def configure_logging(
    *, level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library through one redacting chain to ``stream``.

    ``stream`` defaults to stdout (the daemon); one-shot commands pass stderr so stdout stays
    free for their output. Safe to call more than once (tests, config reloads).
    """
    stream = stream or sys.stdout
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer = _renderer(fmt, stream)
    # Tracebacks become data (JSON) or text (console) *before* redaction, so it scrubs them too.
    exception_step: Processor = (
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if isinstance(renderer, structlog.processors.JSONRenderer)
        else structlog.processors.format_exc_info
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exception_step,
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
