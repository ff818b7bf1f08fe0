"""Every Markdown file that the code, tests, scripts, deployment files and docs cite exists in
this repository, with the heading a citation names.

Cited are: relative links in Markdown (resolved from the linking document, as
:mod:`tests.unit.test_docs_links` checks them), and bare mentions of a ``*.md`` path, with or
without a ``#heading``, anywhere in Markdown and configuration files, or in Python docstrings
and comments (string literals in code are file names the code writes, not citations). A mention
resolves from the citing file's folder or from the repository root; a bare name without a folder
may also be any Markdown file of the repository (``chaos.md`` among the bench results). A
document that lives outside the repository is no reference a reader can follow, and fails.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

from tests.unit.test_docs_links import broken_links, headings

ROOT = Path(__file__).resolve().parents[2]
SCANNED = (
    "rotator",
    "tests",
    "bench",
    "scripts",
    "deploy",
    "systemd",
    "config",
    "docs",
    "Dockerfile",
    "README.md",
)
_MENTION = re.compile(r"[\w.*/-]*[\w-]\.md(?:#[\w-]+)?(?![\w-])")
_URL = re.compile(r"[a-z]+://\S+")
_SKIPPED = {".git", ".venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_BINARY = {".png", ".jpg", ".gz", ".db", ".pyc", ".json"}


def scanned_files(root: Path = ROOT) -> list[Path]:
    """The files whose citations are checked."""
    files: list[Path] = []
    for name in SCANNED:
        top = root / name
        candidates = top.rglob("*") if top.is_dir() else [top]
        files += [
            p
            for p in candidates
            if p.is_file()
            and p.suffix not in _BINARY
            and not _SKIPPED.intersection(p.relative_to(root).parts)
        ]
    return sorted(files)


def prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of what may cite a document: a Python file's docstrings and
    comments, every line of any other file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        yield from enumerate(text.splitlines(), start=1)
        return
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):  # a docstring, or a string standing alone as one (an attribute's)
            end = node.end_lineno or node.lineno
            yield from ((n, lines[n - 1]) for n in range(node.lineno, end + 1))
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def mentions(line: str) -> list[str]:
    """The ``*.md`` paths a line names; URLs are left out, a glob counts from its last ``*``
    and a templated folder (``<out>/chaos.md``) is dropped."""
    return [m.rsplit("*", 1)[-1].lstrip("/") for m in _MENTION.findall(_URL.sub("", line))]


def problem(mention: str, citing: Path, root: Path, markdown: dict[str, Path]) -> str | None:
    """Why ``mention`` (``path`` or ``path#heading``) cited from ``citing`` cannot be followed,
    or None if it can."""
    name, _, anchor = mention.partition("#")
    candidates = [citing.parent / name, root / name]
    if "/" not in name and name in markdown:
        candidates.append(markdown[name])
    target = next((c for c in candidates if c.is_file()), None)
    if target is None:
        return mention
    if anchor and anchor not in headings(target.read_text(encoding="utf-8")):
        return f"{mention}: no such heading"
    return None


def unresolved(root: Path = ROOT) -> list[str]:
    """``file:line: name`` for each citation of a Markdown file the repository lacks."""
    files = scanned_files(root)
    markdown = {p.name: p for p in files if p.suffix == ".md"}
    found = []
    for path in files:
        where = path.relative_to(root)
        for number, line in prose_lines(path):
            found += [
                f"{where}:{number}: {why}"
                for mention in mentions(line)
                if (why := problem(mention, path, root, markdown)) is not None
            ]
        if path.suffix == ".md":
            found += [f"{where}: {link}" for link in broken_links(path)]
    return sorted(set(found))


def test_every_cited_markdown_file_exists() -> None:
    """Nothing in the repository cites a document that is not in it."""
    assert unresolved() == []


def test_a_citation_of_a_missing_document_is_reported(tmp_path: Path) -> None:
    """Docstrings, comments, Markdown prose and links are read; code strings and URLs are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "real.md").write_text("# Real\n")
    (tmp_path / "rotator").mkdir()
    (tmp_path / "rotator" / "m.py").write_text(
        '"""Cites docs/real.md and GONE.md."""\n'
        "\n"
        "# a comment citing docs/missing.md and docs/real.md#real, docs/real.md#gone\n"
        'OUT = "written.md"  # the file it writes is no citation: real.md\n'
        'URL = "https://example.com/x.md"\n'
    )
    (tmp_path / "docs" / "page.md").write_text(
        "[ok](real.md) [gone](../nowhere.md) see `docs/real.md`, `BRIEF.md` and docs/**/real.md\n"
    )
    assert unresolved(tmp_path) == [
        "docs/page.md: ../nowhere.md: no such file",
        "docs/page.md:1: ../nowhere.md",
        "docs/page.md:1: BRIEF.md",
        "rotator/m.py:1: GONE.md",
        "rotator/m.py:3: docs/missing.md",
        "rotator/m.py:3: docs/real.md#gone: no such heading",
    ]
