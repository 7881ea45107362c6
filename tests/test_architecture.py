"""The layout is the architecture: imports flow one way, and no module imports itself in a circle.

Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edge"
FOUNDATION = ("edge", "edge.errors", "edge.config", "edge.files", "edge.languages", "edge.manifest", "edge.limits",
              "edge.vocabulary", "edge.backoff")  # every module may use these

# What each stage may import besides itself and the foundation: downstream in
# the data flow audio -> vad -> asr -> stream -> publish, the daemon wires
# them, commands drive the daemon. publish knows only its own protocol.
ALLOWED: dict[str, tuple[str, ...]] = {
    "edge.audio": (),
    "edge.service": (),
    "edge.accel": (),
    "edge.publish": (),
    "edge.apps": ("edge.publish",),  # local apps of the socket (caption page, MQTT bridge): clients only
    "edge.vad": ("edge.audio",),
    "edge.asr": ("edge.accel", "edge.audio"),
    "edge.stream": ("edge.asr", "edge.vad", "edge.audio", "edge.publish.protocol"),
    "edge.daemon": ("edge.stream", "edge.asr", "edge.vad", "edge.audio", "edge.publish", "edge.service"),
    "edge.commands": ("edge.daemon", "edge.stream", "edge.asr", "edge.accel", "edge.vad", "edge.audio",
                      "edge.publish", "edge.service", "edge.apps"),
    "edge.cli": ("edge.commands",),
    "edge.__main__": ("edge.cli",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def package_of(path: Path) -> str:
    """The package a module's relative imports start from: itself for an __init__.py, else its parent."""
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_module(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` names, a relative one (`from ..stream import x`) resolved."""
    if node.level == 0:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(path: Path, known: set[str], package: str | None = None) -> set[str]:
    """Every edge module `path` imports, anywhere in the file; `from pkg import mod` counts as pkg.mod."""
    package = package_of(path) if package is None else package
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = imported_module(node, package)
            for alias in node.names:
                child = f"{module}.{alias.name}"
                found.add(child if child in known else module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) - {name} for name, path in found.items()}


def stage_of(module: str) -> str:
    return next(stage for stage in sorted(ALLOWED, key=len, reverse=True) if module == stage or module.startswith(stage + "."))


def allowed(importer: str, imported: str) -> bool:
    if imported in FOUNDATION:
        return True
    stage = stage_of(importer)
    targets = (stage, *ALLOWED[stage])
    return any(imported == target or imported.startswith(target + ".") for target in targets)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_belongs_to_a_stage() -> None:
    strays = [name for name in modules() if name not in FOUNDATION and not any(
        name == stage or name.startswith(stage + ".") for stage in ALLOWED)]
    assert strays == [], "modules outside the stage layout (add them to a stage package)"


def test_imports_flow_one_way() -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() if a not in FOUNDATION
                    for b in targets if not allowed(a, b))
    assert upward == []


def test_foundation_imports_nothing_above_it() -> None:
    edges = graph()
    assert {name: sorted(edges[name] - set(FOUNDATION)) for name in FOUNDATION} == {name: [] for name in FOUNDATION}


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]), ({"a": {"b"}, "b": set()}, [])],
)
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_direction_rule_rejects_an_upward_import() -> None:
    assert not allowed("edge.asr.whisper.recognizer", "edge.stream.session")
    assert not allowed("edge.publish.server", "edge.audio.base")
    assert allowed("edge.stream.session", "edge.asr.base")


def test_relative_imports_count_as_the_modules_they_name(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("from ..stream import session\nfrom . import base\nfrom .whisper.decoding import Decoder\n")
    known = set(modules())
    assert imports_of(source, known, "edge.asr") == {"edge.stream.session", "edge.asr.base", "edge.asr.whisper.decoding"}
