"""The package's imports only point down: no cycles, and no edge up the layer table.

An AST walk over ``rotator/`` builds the import graph (module-level and function-level
imports both count, ``TYPE_CHECKING`` ones too) and checks it against ``LAYERS``.
Run with ``-s`` for the figures.

Layers, top to bottom (an edge may only point to a lower rank; within one rank only
inside the same group — the engine and the backends are peers that meet in the
contracts and never import each other; and the faces reach the backends and the store
kinds only through the composition root, ``BYPASS``, as the engine never reaches the
store kinds):

===== ============ =============================================================
rank  group        modules
===== ============ =============================================================
7     faces        cli, __main__, daemon/, probe, report, checks
6     app          app/ (the composition root: builds the engine from config)
5     engine       engine/ (rotation, revocation, recovery; talks to contracts)
5     backends     mistral/, state/ (implement the contracts)
4     config       config/ (the file; its stores are the kinds of the registry)
3     stores       destinations/ (each store kind: its schema, its construction
                   and its destination; the registry listing them)
2     contracts    contracts (the protocols and records both sides share)
1     vocabulary   errors, secret, keys, clock, durations, schedule, logs, retry,
                   render, pool, fields, the package itself
===== ============ =============================================================

``config`` reads the store kinds from ``destinations/registry.py`` (each kind owns its
schema), so the kinds sit below it, and it below everything that reads a configuration.
docs/design/20261206-import-layers.md explains the table.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rotator"

# module prefix -> (rank, group). The longest matching prefix wins.
LAYERS: dict[str, tuple[int, str]] = {
    "rotator": (1, "vocabulary"),
    "rotator.contracts": (2, "contracts"),
    "rotator.destinations": (3, "stores"),
    "rotator.config": (4, "config"),
    "rotator.mistral": (5, "backends"),
    "rotator.state": (5, "backends"),
    "rotator.engine": (5, "engine"),
    "rotator.app": (6, "app"),
    "rotator.cli": (7, "faces"),
    "rotator.__main__": (7, "faces"),
    "rotator.daemon": (7, "faces"),
    "rotator.probe": (7, "faces"),
    "rotator.report": (7, "faces"),
    "rotator.checks": (7, "faces"),
}

ALLOWED: set[tuple[str, str]] = set()
"""Edges exempt from the table (none: the dev kit lives in ``rotator_dev/``, outside this graph;
``tests/unit/test_wheel_contents.py`` checks ``rotator`` reaches it only behind ``dev standin``)."""

BYPASS: set[tuple[str, str]] = {
    # The faces reach the backends and the store kinds only through the composition root (app/).
    ("faces", "backends"),
    ("faces", "stores"),
    # The engine speaks to destinations through the contracts, as to every backend.
    ("engine", "stores"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package modules ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            module = target
            while module and module not in known:
                module = module.rpartition(".")[0]
            if module and module != name:
                yield module


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imported(name, path, known)) for name, path in found.items()}


def layer(name: str) -> tuple[int, str]:
    prefix = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def upward_edges(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        rank, group = layer(src)
        for dst in sorted(targets):
            dst_rank, dst_group = layer(dst)
            if (src, dst) in ALLOWED:
                continue
            if (
                dst_rank > rank
                or (dst_rank == rank and dst_group != group)
                or (group, dst_group) in BYPASS
            ):
                bad.append(f"{src} ({group}) -> {dst} ({dst_group})")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def summary(edges: dict[str, set[str]]) -> str:
    loops, up = cycles(edges), upward_edges(edges)
    lines = [
        (
            f"modules={len(edges)} edges={sum(map(len, edges.values()))} "
            f"cycles={len(loops)} upward_edges={len(up)}"
        ),
        *(f"  cycle: {' <-> '.join(loop)}" for loop in loops),
        *(f"  upward: {edge}" for edge in up),
    ]
    return "\n".join(lines)


def test_every_module_has_a_layer() -> None:
    assert all(layer(name) for name in modules())


def test_the_walk_sees_function_level_and_relative_imports() -> None:
    edges = graph()
    assert "rotator.daemon.runner" in edges["rotator.cli"]  # imported inside a function
    assert len(edges) > 50


def test_faces_use_the_engine_api_not_its_deps() -> None:
    """The faces drive the engine through its methods; ``engine.deps`` is the root's business."""
    found = modules()
    reaches = [
        f"{name}:{node.lineno}"
        for name, path in found.items()
        if layer(name)[1] == "faces"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "deps"
    ]
    assert not reaches, f"faces reaching into engine.deps: {reaches}"


def test_imports_point_down_without_cycles() -> None:
    edges = graph()
    report = summary(edges)
    print(f"\nimport graph: {report}")
    assert not cycles(edges), report
    assert not upward_edges(edges), report
