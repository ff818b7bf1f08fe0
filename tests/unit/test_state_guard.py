"""What the state store lets into the database: identifiers, JSON facts, scrubbed error text."""

from __future__ import annotations

import pytest

from rotator.contracts import JsonValue
from rotator.secret import MASK, Secret
from rotator.state import guard

PLAIN = "Q" * 8 + "r" * 8 + "7" * 16  # 32 letters and digits: shaped like a Mistral key


def test_identifiers_pass_unchanged() -> None:
    """Key ids, fingerprints, names and version ids are stored as given."""
    for value in ("0b5e8a59-13a4-4f4e-9c1c-2a3b4c5d6e7f", "0123456789ab", "rotator-prod-1", "7"):
        assert guard.ident(value, "f", 64) == value


@pytest.mark.parametrize("value", [PLAIN, "Bearer abc.def", "hvs.ABCDEFGHIJKLMNOPQRSTUVWX"])
def test_credential_shaped_identifiers_are_refused(value: str) -> None:
    """A key, a bearer header or a Vault token is refused, with the field named and the value
    kept out of the message."""
    with pytest.raises(ValueError, match="key_id: refused") as caught:
        guard.ident(value, "key_id", 64)
    assert value not in str(caught.value)


def test_a_recent_plaintext_is_refused_whatever_its_shape() -> None:
    """A value wrapped in a Secret in this process is refused even if no pattern matches it."""
    plaintext = "just.a-phrase.nobody.would_guess"
    Secret(plaintext)
    with pytest.raises(ValueError, match="refused"):
        guard.ident(plaintext, "new_key_name", 255)


def test_secrets_and_wrong_types_are_type_errors() -> None:
    """A Secret, a non-string or a lone string where a list belongs is a TypeError."""
    with pytest.raises(TypeError, match="Secret is never stored"):
        guard.ident(Secret(PLAIN), "key_id", 64)
    with pytest.raises(TypeError, match="expected a string"):
        guard.ident(42, "key_id", 64)
    with pytest.raises(TypeError, match="sequence of strings"):
        guard.idents("abc", "old_key_ids", 64)
    with pytest.raises(ValueError, match="1 to 4 characters"):
        guard.ident("toolong", "state", 4)


def test_error_text_is_scrubbed_not_refused() -> None:
    """Error text keeps its words and loses anything credential-shaped."""
    assert guard.error_text(f"403 for key {PLAIN} at vault") == f"403 for key {MASK} at vault"
    assert guard.error_text(None) is None


def test_facts_scrub_error_keys_and_check_the_rest() -> None:
    """Under error, errors, reason and detail, text is scrubbed (nested too); elsewhere a
    credential is refused; tuples become lists and scalars are kept."""
    facts: dict[str, JsonValue] = {
        "destinations": ({"version": "3", "ok": True, "attempts": 2, "elapsed": 0.5},),
        "errors": [{"destination": "aws", "message": f"echoed {PLAIN}"}],
        "reason": f"bad {PLAIN}",
        "none": None,
    }
    assert guard.facts(facts) == {
        "destinations": [{"version": "3", "ok": True, "attempts": 2, "elapsed": 0.5}],
        "errors": [{"destination": "aws", "message": f"echoed {MASK}"}],
        "reason": f"bad {MASK}",
        "none": None,
    }
    with pytest.raises(ValueError, match=r"facts\.destinations\[0\]\.version: refused"):
        guard.facts({"destinations": [{"version": PLAIN}]})


@pytest.mark.parametrize(
    "facts", [{"raw": b"bytes"}, {"n": float("inf")}, {"s": Secret(PLAIN)}, {"o": object()}]
)
def test_facts_that_are_not_json_safe_are_refused(facts: dict[str, object]) -> None:
    """Bytes, infinities, Secrets and arbitrary objects are not JSON facts."""
    with pytest.raises(TypeError):
        guard.facts(facts)  # type: ignore[arg-type]
