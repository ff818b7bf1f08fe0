"""The Secret wrapper never prints its plaintext and compares safely."""

from __future__ import annotations

import json
import pickle

import pytest

from rotator.secret import Secret, fingerprint_of

PLAIN = "k3yK3yk3yK3yk3yK3yk3yK3yk3yK3y00"


def test_every_rendering_is_masked() -> None:
    """str, repr, format and f-strings of a Secret all print ***."""
    s = Secret(PLAIN)
    rendered = [str(s), repr(s), f"{s}", f"{s!r}", "{}".format(s), "%s" % s]  # noqa: UP031, UP032
    assert all(PLAIN not in r for r in rendered)
    assert str(s) == "***"


def test_reveal_and_fingerprint() -> None:
    """reveal() returns the plaintext; the fingerprint is 12 hex of SHA-256."""
    s = Secret(PLAIN)
    assert s.reveal() == PLAIN
    assert s.fingerprint == fingerprint_of(PLAIN)
    assert len(s.fingerprint) == 12
    int(s.fingerprint, 16)


def test_equality_by_value() -> None:
    """Two Secrets with the same value are equal; different values are not."""
    assert Secret(PLAIN) == Secret(PLAIN)
    assert Secret(PLAIN) != Secret(PLAIN + "x")
    assert Secret(PLAIN) != PLAIN


def test_cannot_be_pickled_or_json_encoded() -> None:
    """A Secret refuses pickling and is not JSON-serialisable by accident."""
    with pytest.raises(TypeError):
        pickle.dumps(Secret(PLAIN))
    with pytest.raises(TypeError):
        json.dumps({"k": Secret(PLAIN)})


def test_empty_is_refused() -> None:
    """An empty secret is a configuration mistake, not a value."""
    with pytest.raises(ValueError, match="non-empty"):
        Secret("")
