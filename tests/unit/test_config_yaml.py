"""The configuration's YAML reader: libyaml's events turned into the document directly
(``rotator.config.loader._read_events``) gives exactly what PyYAML's safe loader gives, and
leaves everything else to it (issue 14: a large fleet's file without PyYAML's node tree)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.config.loader import _parse_yaml, _read_events, _StrictLoader, _Unsupported

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not getattr(yaml, "__with_libyaml__", False), reason="PyYAML without libyaml"
)


def same(a: object, b: object) -> bool:
    """Equal values of equal types (1 is not True, NaN equals NaN), shapes included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def pyyaml(text: str) -> object:
    return yaml.load(text, Loader=_StrictLoader)


@pytest.mark.parametrize(
    "path",
    sorted(REPO.glob("config/*.yaml")) + sorted(REPO.glob("systemd/*.yaml.example")),
    ids=lambda p: p.name,
)
def test_the_shipped_configurations_take_the_event_path(path: Path) -> None:
    """The example files need no fallback, and read the same as with PyYAML's loader."""
    text = path.read_text(encoding="utf-8")
    assert same(_read_events(text), pyyaml(text))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "plain\n",
        "a: 1\nb: [1, 'two', ~, yes, No, 1.5, .inf, -.inf, 0x1f, 0o17, 1_000]\n",
        "a: &x {k: v, n: [1, 2]}\nb: *x\nc: *x\n",
        "a: 2001-02-03\nb: 2001-02-03T04:05:06Z\nc: '2001-02-03'\n",
        "a: |\n  two\n  lines\nb: >\n  folded\n  text\n",
        "a:\nb: ''\nc: ' '\n",
        "? complex\n: key\n2: two\n1.5: x\ntrue: t\n~: null key\n",
        "- [a, [b, [c, {d: e}]]]\n- {}\n- []\n",
        "a: !!str 3\n",
        "a: &s scalar\nb: *s\n",
    ],
)
def test_documents_read_as_pyyaml_reads_them(text: str) -> None:
    assert same(_parse_yaml(text, "t.yaml"), pyyaml(text))


@pytest.mark.parametrize(
    "text",
    [
        "<<: {a: 1}\nb: 2\n",  # a merge key
        "a: !!binary aGVsbG8=\n",  # a tag beyond the core scalars
        "a: !!set {x, y}\n",
        "a: !custom x\n",
        "a: 1\na: 2\n",  # a duplicate key
        "? [a, b]\n: c\n",  # a collection as a key
        "a: *nowhere\n",  # an unknown anchor
        "a: &x 1\nb: &x 2\n",  # an anchor defined twice
        "a: 1\n---\nb: 2\n",  # two documents
        "a: 2001-02-30\n",  # a date that does not exist
        "a: [" * 150 + "]" * 150 + "\n",  # deeper than the event reader goes
    ],
)
def test_what_the_event_reader_leaves_to_pyyaml(text: str) -> None:
    """These raise :class:`_Unsupported` (or a YAML or value error), so that PyYAML's loaders
    read them and their messages are the ones shown."""
    with pytest.raises((_Unsupported, yaml.YAMLError, ValueError)):
        _read_events(text)


def test_a_recursive_alias_is_the_same_object_as_with_pyyaml() -> None:
    """``a: &x [*x]``: a list holding itself (the loader then refuses it, naming a[0])."""
    document = _read_events("a: &x [*x]\n")
    assert isinstance(document, dict)
    assert document["a"][0] is document["a"]


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.dates(),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), inner, max_size=5),
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from([None, True, False]))
def test_random_documents_read_as_pyyaml_reads_them(document: Any, flow: bool | None) -> None:
    """Any document PyYAML writes (block or flow style, shared values as anchors) reads back
    the same through the event reader as through PyYAML's loader."""
    shared = {"first": document, "again": document}  # dumped as an anchor and an alias
    text = yaml.safe_dump(shared, default_flow_style=flow, allow_unicode=True)
    assert same(_read_events(text), pyyaml(text))
