"""The wheel ships rotator alone: no dev kit (rotator_dev: the stand-in, the demo, the in-memory
destination), no tests, nothing else from the repository."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What a wheel build reads; rotator_dev sits beside rotator as in the checkout, to be left out.
SOURCES = ("pyproject.toml", "README.md", "rotator", "rotator_dev")


def build_wheel(tmp_path: Path) -> list[str]:
    """Build the wheel from a copy of the sources (the checkout gets no build/ or egg-info);
    return its file list."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)],
        cwd=source,
        capture_output=True,
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("rotator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_holds_rotator_only_and_no_dev_kit(tmp_path: Path) -> None:
    """Every file of the wheel is under rotator/ or its dist-info; rotator_dev, the stand-in, the
    demo and the in-memory destination are not in it, while every module of rotator/ is."""
    names = build_wheel(tmp_path)
    dist_info = [n for n in names if n.split("/")[0].endswith(".dist-info")]
    assert {n.split("/")[0] for n in dist_info} == {"rotator-0.1.0.dist-info"}
    package = [n for n in names if n not in dist_info]
    assert [n for n in package if not n.startswith("rotator/")] == []
    dev_kit = ("rotator_dev", "standin", "rotator/dev/", "demo", "memory.py")
    assert [n for n in names if any(word in n for word in dev_kit)] == []
    shipped = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "rotator").rglob("*")
        if p.is_file() and p.suffix in {".py", ".typed"} and "__pycache__" not in p.parts
    }
    assert set(package) == shipped


def dev_kit_imports(path: Path) -> list[str]:
    """The function each import of rotator_dev in ``path`` sits in (``<module>`` at the top)."""
    found = []

    def visit(node: ast.AST, scope: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scope = node.name
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        found.extend(scope for name in names if name.split(".")[0] == "rotator_dev")
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(path.read_text(), str(path)), "<module>")
    return found


def test_rotator_imports_the_dev_kit_only_behind_dev_standin() -> None:
    """rotator/ never imports rotator_dev, but for the lazy import inside `rotator dev standin`
    (which says so when the dev kit is not installed); nor does it name it in a dynamic import."""
    found = {
        (path.relative_to(REPO).as_posix(), scope)
        for path in (REPO / "rotator").rglob("*.py")
        for scope in dev_kit_imports(path)
    }
    assert found == {("rotator/cli.py", "dev_standin")}
    dynamic = [
        path.relative_to(REPO).as_posix()
        for path in (REPO / "rotator").rglob("*.py")
        if any(call in path.read_text() for call in ("import_module(", "__import__("))
    ]
    assert dynamic == []
