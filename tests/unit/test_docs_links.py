"""Every relative link in docs/, the README and deploy/**/README.md points at a file that
exists, and at a heading that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(markdown: str) -> set[str]:
    """The anchors of a document's headings (outside code blocks)."""
    text = _FENCE.sub("", markdown)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def broken_links(document: Path) -> list[str]:
    """Relative links of ``document`` whose file or ``#anchor`` does not exist."""
    text = _CODE.sub("", _FENCE.sub("", document.read_text(encoding="utf-8")))
    broken = []
    for link in _LINK.findall(text):
        if re.match(r"[a-z]+:", link):
            continue  # http:, https:, mailto:
        path, _, anchor = link.partition("#")
        target = (document.parent / path).resolve() if path else document
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif (
            anchor
            and target.suffix == ".md"
            and anchor not in headings(target.read_text(encoding="utf-8"))
        ):
            broken.append(f"{link}: no such heading")
    return broken


def test_relative_links_in_the_docs_resolve() -> None:
    """No document under docs/ links to a missing file or heading."""
    found = {str(doc.relative_to(DOCS)): broken_links(doc) for doc in sorted(DOCS.rglob("*.md"))}
    assert {doc: links for doc, links in found.items() if links} == {}


def test_relative_links_in_the_readmes_resolve() -> None:
    """The repository's README and every README under deploy/ link only to what exists."""
    readmes = [ROOT / "README.md", *sorted((ROOT / "deploy").rglob("README.md"))]
    assert len(readmes) >= 2
    found = {str(doc.relative_to(ROOT)): broken_links(doc) for doc in readmes}
    assert {doc: links for doc, links in found.items() if links} == {}


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    """A link to a missing file or heading is reported; code spans and URLs are ignored."""
    (tmp_path / "b.md").write_text("# Real heading\n")
    doc = tmp_path / "a.md"
    doc.write_text(
        "[ok](b.md#real-heading) [gone](c.md) [bad](b.md#nope) `x[](y)` [web](https://e.x)\n"
    )
    assert broken_links(doc) == ["c.md: no such file", "b.md#nope: no such heading"]
