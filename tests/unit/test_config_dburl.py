"""Database URLs (``state.url``) parsed as rotator always read them (SQLAlchemy's form), with
:mod:`urllib.parse`: backend, password, SQLite path, the masked form and libpq's URI."""

from __future__ import annotations

import pytest

from rotator.config.dburl import parse_database_url


@pytest.mark.parametrize(
    ("url", "backend", "password", "database", "safe"),
    [
        ("sqlite://", "sqlite", None, None, "sqlite://"),
        ("sqlite:///:memory:", "sqlite", None, ":memory:", "sqlite:///:memory:"),
        ("sqlite:///rel/x.db", "sqlite", None, "rel/x.db", "sqlite:///rel/x.db"),
        ("sqlite:////abs/x.db", "sqlite", None, "/abs/x.db", "sqlite:////abs/x.db"),
        (
            "sqlite:////a b/x%20y#1.db",
            "sqlite",
            None,
            "/a b/x%20y#1.db",
            "sqlite:////a b/x%20y#1.db",
        ),
        ("sqlite:///file:x?mode=ro", "sqlite", None, "file:x", "sqlite:///file:x?mode=ro"),
        ("sqlite+pysqlite:////s.db", "sqlite", None, "/s.db", "sqlite+pysqlite:////s.db"),
        (
            "postgresql://u:p%40ss@h:5432/db?sslmode=require",
            "postgresql",
            "p@ss",
            "db",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("postgresql+psycopg://u@h/db", "postgresql", None, "db", "postgresql+psycopg://u@h/db"),
        (
            "postgresql://u:@[::1]:5433/db",
            "postgresql",
            "",
            "db",
            "postgresql://u:***@[::1]:5433/db",
        ),
        ("postgres://u@h/db", "postgres", None, "db", "postgres://u@h/db"),
        ("mysql://db/state", "mysql", None, "state", "mysql://db/state"),
    ],
)
def test_urls_parse_as_before(
    url: str, backend: str, password: str | None, database: str | None, safe: str
) -> None:
    """The parts rotator reads, and the masked form shown in logs and messages."""
    parsed = parse_database_url(url)
    assert (parsed.backend, parsed.password, parsed.database, parsed.safe()) == (
        backend,
        password,
        database,
        safe,
    )


@pytest.mark.parametrize("url", ["", "not a url", "://x", "sqlite:/x", "postgresql://u@h:port/db"])
def test_what_is_not_a_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"not a database URL|Port"):
        parse_database_url(url)


def test_libpq_gets_the_url_without_the_driver_and_with_the_password() -> None:
    url = parse_database_url("postgresql+psycopg://u:p%40ss@h:5432/db?sslmode=require")
    assert url.libpq() == "postgresql://u:p%40ss@h:5432/db?sslmode=require"
