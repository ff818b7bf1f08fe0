"""Database URLs (``state.url``): ``sqlite:///path`` and ``postgresql[+driver]://…``, parsed with
:mod:`urllib.parse`.

The form is the one rotator has always taken (SQLAlchemy's): ``backend[+driver]://`` then, for
PostgreSQL, a libpq URI's ``user:password@host:port/database?options``; for SQLite the path after
the third slash (``sqlite:////abs/path`` is absolute, ``sqlite:///rel/path`` relative), taken
literally (no percent-decoding, no ``#`` fragment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_SCHEME = re.compile(r"[\w+]+")
MASK = "***"
"""What a password is shown as."""


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """A parsed database URL. ``backend`` is the scheme before any ``+driver``; ``password``
    is percent-decoded (None when the URL has none); ``database`` is the path after the
    authority's slash (for SQLite, the file path), None when empty."""

    text: str
    backend: str
    driver: str | None
    username: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None

    def safe(self) -> str:
        """The URL with any password masked, for logs and messages."""
        if self.password is None:
            return self.text
        scheme, _, rest = self.text.partition("://")
        netloc, path = _split_netloc(rest)
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return f"{scheme}://{user}:{MASK}@{hostport}{path}"

    def libpq(self) -> str:
        """The ``postgresql://`` URI libpq (psycopg) takes: the scheme without the driver,
        everything else (password included) as written."""
        return "postgresql://" + self.text.partition("://")[2]


def _split_netloc(rest: str) -> tuple[str, str]:
    """(authority, what follows it) of the text after ``scheme://``."""
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    return rest[:cut], rest[cut:]


def parse_database_url(text: str) -> DatabaseUrl:
    """``text`` parsed; ``ValueError`` if it is not a ``backend[+driver]://…`` URL (or its port
    is not a number)."""
    scheme, sep, _ = text.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError(f"not a database URL: {text!r}")
    parts = urlsplit(text, allow_fragments=False)
    port = parts.port  # raises ValueError for a port that is not a number
    backend, _, driver = scheme.partition("+")
    path = parts.path.removeprefix("/")
    return DatabaseUrl(
        text=text,
        backend=backend,
        driver=driver or None,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname,
        port=port,
        database=path or None,
    )


__all__ = ["MASK", "DatabaseUrl", "parse_database_url"]
