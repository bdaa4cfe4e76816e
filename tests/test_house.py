"""The shape of the house (docs/DESIGN.md, "The house as built"): no import circle among the project's
modules, counting imports inside functions (a hidden circle is still one); each room imports only
the rooms the map allows; and ``sotalign/`` free of Ray, MLflow and Optuna (the method is a library
anyone can call with tensors)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sotalign", "orchestrator")
LAUNCHERS = ("ray", "mlflow", "optuna")  # what only orchestrator/ may import
ROOMS = {  # docs/DESIGN.md's map: room -> the other rooms it may import
    "sotalign": {"sotalign/core", "sotalign/two_stage"},  # the package face: AlignConfig, AlignedModel, fit
    "sotalign/core": set(),
    "sotalign/encoders": {"sotalign/core"},
    "sotalign/data": {"sotalign/core", "sotalign/encoders"},
    "sotalign/objectives": {"sotalign/core"},
    "sotalign/stage2": {"sotalign/core", "sotalign/objectives"},
    "sotalign/training_free": {"sotalign/core"},
    "sotalign/two_stage": {
        "sotalign/core",
        "sotalign/data",
        "sotalign/objectives",
        "sotalign/stage2",
        "sotalign/training_free",
    },
    "sotalign/experiments": {
        "sotalign/core",
        "sotalign/data",
        "sotalign/encoders",
        "sotalign/stage2",
        "sotalign/two_stage",
    },
    "sotalign/__main__": {"orchestrator"},  # `python -m sotalign`: hands over to the command, imported by nothing
    "orchestrator": {
        "sotalign",
        "sotalign/core",
        "sotalign/data",
        "sotalign/encoders",
        "sotalign/experiments",
        "sotalign/stage2",
        "sotalign/two_stage",
    },
}


def room(module: str) -> str:
    """The map's room of a module: a sub-package or stage module of sotalign/, its core, or orchestrator/."""
    parts = module.split(".")
    if parts[0] == "orchestrator" or parts == ["sotalign"]:
        return parts[0]
    named = {"__main__", "encoders", "data", "objectives", "stage2", "training_free", "two_stage", "experiments"}
    return f"sotalign/{parts[1]}" if parts[1] in named else "sotalign/core"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in the file names (functions
    included), with ``from package import name`` also counted as ``package.name``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's ``__init__`` stands for the package)."""
    files = {module_name(p, root): p for package in PACKAGES for p in (root / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for imported in imported_names(path):
            while imported and imported not in files:  # sotalign.objectives.base.Step -> sotalign.objectives.base
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_circle_inside_a_function(tmp_path):
    package = tmp_path / "sotalign"
    package.mkdir()
    (tmp_path / "orchestrator").mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from sotalign.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from sotalign import a\n")
    (package / "c.py").write_text("import sotalign.a\n")
    assert cycles(import_graph(tmp_path)) == [["sotalign.a", "sotalign.b"]]


def test_no_import_cycle_among_the_project_modules():
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(circle) for circle in found)


def test_every_room_imports_only_what_the_map_allows():
    graph = import_graph()
    assert {room(module) for module in graph} == set(ROOMS), "a room the map does not know: add it to docs/DESIGN.md"
    crossings = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if room(target) != room(module) and room(target) not in ROOMS[room(module)]
    )
    assert not crossings, "imports the map does not allow: " + "; ".join(crossings)


@pytest.mark.parametrize("path", sorted((ROOT / "sotalign").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_method_never_imports_the_launchers(path):
    used = {name.split(".")[0] for name in imported_names(path)} & set(LAUNCHERS)
    assert not used, f"{path.relative_to(ROOT)} imports {sorted(used)}: that belongs in orchestrator/"
