"""The layering ARCHITECTURE.md states is the layering the code has.

Walks every module of ``bettersynth`` and ``bettersynth_demo`` (ast, so every
import counts, also the lazy ones inside functions) and fails on an import a
folder's row does not allow, on a row allowing a folder above it, on a folder
the table does not list, and on any import cycle between modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PLATFORM, DEMO = "bettersynth", "bettersynth_demo"
ROW = re.compile(r"^\| `(?P<folder>[a-z_]+)/` \|[^|]+\|(?P<imports>[^|]*)\|$")


def layers() -> list[tuple[str, set[str]]]:
    """ARCHITECTURE.md's table, top to bottom: (folder, folders it may import)."""
    rows = []
    for line in (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line.strip())
        if match:
            allowed = {name.strip() for name in match["imports"].split(",") if name.strip()}
            rows.append((match["folder"], allowed))
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in (PLATFORM, DEMO) for p in (SRC / package).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{alias.name}" for alias in node.names} & known
            found |= subs or {target}
    return {t for t in found if t.split(".")[0] in (PLATFORM, DEMO) and t != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {t for t in imports_of(name, path, known) if t in known or t.rpartition(".")[0] in known}
            for name, path in mods.items()}


def folder(module: str) -> str | None:
    """``bettersynth.<folder>...`` -> folder; the demo package is one folder of its own."""
    parts = module.split(".")
    if parts[0] == DEMO:
        return DEMO
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (SRC / PLATFORM / parts[1]).is_dir()) else None


def test_the_table_lists_every_folder_and_only_allows_folders_below() -> None:
    rows = layers()
    listed = [name for name, _ in rows]
    on_disk = sorted(p.name for p in (SRC / PLATFORM).iterdir() if (p / "__init__.py").is_file())
    assert sorted(listed) == on_disk, "ARCHITECTURE.md's folders differ from src/bettersynth's"
    loose = sorted(p.name for p in (SRC / PLATFORM).glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules outside any folder: {loose}"
    for i, (name, allowed) in enumerate(rows):
        below = {n for n, _ in rows[i + 1:]} | ({DEMO} if name == "cli" else set())
        assert allowed <= below, f"{name}/ may import {sorted(allowed - below)}, which are not below it"


def test_no_module_imports_a_folder_its_row_does_not_allow() -> None:
    allowed = dict(layers())
    wrong = []
    for module, targets in graph().items():
        own = folder(module)
        for target in targets:
            other = folder(target)
            if own == other or other is None:
                continue
            if own == DEMO:
                continue  # the demo stands on the whole platform
            if other not in allowed.get(own, set()):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports ARCHITECTURE.md does not allow:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    edges = graph()
    cycles = strongly_connected(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.add(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(component)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}}, [{"a", "b"}]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [{"a", "b", "c"}]),
])
def test_cycle_finder(edges: dict[str, set[str]], expected: list[set[str]]) -> None:
    assert strongly_connected(edges) == expected


def test_the_platform_does_not_import_the_demo_outside_the_command_line() -> None:
    users = sorted(m for m, targets in graph().items()
                   if m.startswith(f"{PLATFORM}.") and folder(m) != "cli" and any(folder(t) == DEMO for t in targets))
    assert not users, f"only bettersynth/cli may import {DEMO}: {users}"


def test_the_walk_sees_known_edges() -> None:
    """Guards the walker itself: edges that exist must be found (lazy imports included)."""
    edges = graph()
    assert "bettersynth.vlm" in edges["bettersynth.train.trainer"]
    assert "bettersynth.vlm" in edges["bettersynth.eval.generate"]
    assert "bettersynth.steps.train_remote" in edges["bettersynth.steps.train"]  # imported inside a function
    assert any(t.startswith(DEMO) for t in edges["bettersynth.cli.proxy"])
