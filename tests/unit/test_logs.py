"""The logging chain: JSON/console output, stdlib routing, and the redaction layers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from rotator.logs import configure_logging, scrub
from rotator.secret import Secret

# Shaped like a real Mistral key (32 letters and digits).
CANARY = "Zq8RkTn3VbL0pW6yHs2MdF9cXe4GaJ7u"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=buf)
    yield buf
    configure_logging(level="WARNING", fmt="json", stream=io.StringIO())


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def _leak_helper(api_key: str) -> None:
    local_copy = api_key  # a frame local that show_locals=True would print
    raise RuntimeError(f"upstream said: bad key {local_copy}")


def test_structlog_event_is_one_json_object_per_line(json_log: io.StringIO) -> None:
    """A structlog event renders as one JSON object with level, logger, timestamp and fields."""
    structlog.get_logger("rotator.test").info("rotation_started", target="prod", attempt=2)
    (line,) = _lines(json_log)
    assert line["event"] == "rotation_started"
    assert line["level"] == "info"
    assert line["target"] == "prod"
    assert line["attempt"] == 2
    assert "timestamp" in line


def test_floats_render_to_the_millisecond(json_log: io.StringIO) -> None:
    """Durations (every float of an event, nested ones too, stdlib records included) render
    rounded to three decimals; integers and booleans are left alone."""
    structlog.get_logger().info(
        "timed", elapsed_s=0.0037184739999815974, nested={"wait": [1.23456]}, n=7, ok=True
    )
    logging.getLogger("lib").warning("slow %s", "call", extra={"seconds": 2.0004999})
    timed, slow = _lines(json_log)
    assert (timed["elapsed_s"], timed["nested"], timed["n"], timed["ok"]) == (
        0.004,
        {"wait": [1.235]},
        7,
        True,
    )
    assert slow["seconds"] == 2.0


def test_secret_value_renders_masked(json_log: io.StringIO) -> None:
    """A Secret logged as a value prints *** and never its plaintext."""
    structlog.get_logger().info("created", new_key=Secret(CANARY))
    assert CANARY not in json_log.getvalue()
    assert _lines(json_log)[0]["new_key"] == "***"


def test_deny_listed_key_names_are_masked(json_log: io.StringIO) -> None:
    """Values under secret-sounding names are masked whatever they look like."""
    structlog.get_logger().info("x", api_key="short", token="t", password="p", key_id="kid-1")
    line = _lines(json_log)[0]
    assert line["api_key"] == line["token"] == line["password"] == "***"
    assert line["key_id"] == "kid-1"


def test_key_shaped_string_is_scrubbed_anywhere(json_log: io.StringIO) -> None:
    """A key-shaped string inside free text, a nested dict or a list is masked."""
    structlog.get_logger().info(
        f"note {CANARY}", detail={"body": f"got {CANARY}"}, items=[CANARY], count=3
    )
    assert CANARY not in json_log.getvalue()
    assert _lines(json_log)[0]["count"] == 3


def test_recently_wrapped_plaintext_is_scrubbed_even_when_not_key_shaped(
    json_log: io.StringIO,
) -> None:
    """A plaintext wrapped in a Secret earlier is masked even if no pattern would catch it."""
    odd = "not-a-pattern-value-42"
    Secret(odd)
    structlog.get_logger().warning("oops", message=f"the value was {odd}")
    assert odd not in json_log.getvalue()


def test_plaintexts_wrapped_after_earlier_scrubs_are_scrubbed_too() -> None:
    """Each plaintext wrapped after the scrubber has already looked at text is masked as well."""
    first, second = "first-odd-value-981", "other~shape:value#77"
    assert scrub("nothing secret here") == "nothing secret here"
    Secret(first)
    assert scrub(f"a {first} b") == "a *** b"
    Secret(second)
    assert scrub(f"{second} and {first}") == "*** and ***"


def test_traceback_has_no_locals_and_a_scrubbed_message(json_log: io.StringIO) -> None:
    """An exception whose frames hold the key logs a traceback without locals or plaintext."""
    try:
        _leak_helper(CANARY)
    except RuntimeError:
        structlog.get_logger().exception("failed")
    text = json_log.getvalue()
    assert CANARY not in text
    line = _lines(json_log)[0]
    frames = line["exception"][0]["frames"]  # type: ignore[index]
    assert frames
    assert all("locals" not in frame or not frame["locals"] for frame in frames)


def test_stdlib_loggers_are_routed_through_the_chain(json_log: io.StringIO) -> None:
    """A stdlib logger (as hvac/botocore use) comes out as redacted JSON too."""
    logging.getLogger("somelib").warning("auth header Bearer %s rejected", CANARY)
    line = _lines(json_log)[0]
    assert line["logger"] == "somelib"
    assert CANARY not in json_log.getvalue()
    assert "Bearer ***" in str(line["event"])


def test_http_client_info_logs_are_silenced(json_log: io.StringIO) -> None:
    """httpx logs full URLs at INFO; those are held back (WARNING and up only)."""
    logging.getLogger("httpx").info("HTTP Request: GET http://x/v1/models")
    logging.getLogger("httpx").warning("kept")
    assert [line["event"] for line in _lines(json_log)] == ["kept"]


def test_console_format_is_scrubbed_too() -> None:
    """The console renderer (used on a TTY) masks secrets and prints tracebacks without locals."""
    buf = io.StringIO()
    configure_logging(level="INFO", fmt="console", stream=buf)
    try:
        _leak_helper(CANARY)
    except RuntimeError:
        structlog.get_logger().exception("failed", key=Secret(CANARY))
    out = buf.getvalue()
    assert "failed" in out
    assert "RuntimeError" in out
    assert CANARY not in out


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        (f"key={CANARY}", CANARY),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("x-api-key: adminsecret", "adminsecret"),
        ("token hvs.CAESIJk1d2b3c4d5e6f7g8h9i0jKLMNOP", "hvs.CAESIJk1d2b3c4d5e6f7g8h9i0jKLMNOP"),
        (f"aws {AWS_SECRET} here", AWS_SECRET),
    ],
)
def test_scrub_masks_known_secret_shapes(text: str, hidden: str) -> None:
    """scrub() masks Mistral keys, bearer/x-api-key values, Vault tokens and AWS secret keys."""
    out = scrub(text)
    assert hidden not in out
    assert "***" in out


def test_scrub_keeps_ids_and_fingerprints() -> None:
    """UUID key ids and 12-hex fingerprints are useful facts and stay readable."""
    text = "key_id=019b2bd7-96e7-7219-8c0b-45a73da50088 fingerprint=3f2a9c0d1e4b"
    assert scrub(text) == text
