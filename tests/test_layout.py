"""The package's layout, counted from its import graph: one folder per stage of the flow,
imports that only point down the flow, no cycles, no private names crossing modules, and
modules small enough to read (docs/design.md of the project's layout: README "Layout")."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffinfer"

# the rooms of the package, lowest first: a module may import from its own room or from a
# room of a lower rank, never from a higher one
RANKS = {
    "errors": 0, "version": 0,
    "validation": 1, "io": 1, "progress": 1, "provenance": 1, "styles": 1, "cosmology": 1,
    "parameters": 2, "store": 2,
    "prior": 3, "fields": 3,
    "simulators": 4, "plots": 4,
    "data": 5,
    "diffusion": 6,
    "training": 7, "likelihoods": 7,
    "inference": 8,
    "calibration": 9, "cobaya": 9,
    "cli": 10,
    "__main__": 11,
}  # fmt: skip

MAX_LINES = 500
LONG_MODULES = {
    "diffinfer.inference.posterior": "the Posterior class (its methods are the public surface: "
    "grid, sample, summary, diagnostics, mc_error, goodness_of_fit, save) and the posterior() "
    "dispatcher, whose docstring documents every option",
    "diffinfer.likelihoods.diffusion": "one class, DiffusionLikelihood, whose state (draws, "
    "term plan, cache, control variate, added timesteps) every method shares; its term plan, "
    "locator and builder live in terms.py, locate.py and built.py",
}
"""Modules allowed above :data:`MAX_LINES`, with the reason."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str:
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (at the top or inside functions)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {_resolve(a.name, modules) for a in node.names
                            if a.name.startswith("diffinfer")}  # fmt: skip
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffinfer"):
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    targets.add(full if full in modules else _resolve(node.module, modules))
        graph[name] = targets - {name}
    return graph


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "diffinfer"


def test_every_room_has_a_rank() -> None:
    rooms = {_room(m) for m in _modules()} - {"diffinfer", "models"}
    assert rooms <= set(RANKS), f"place these in RANKS: {sorted(rooms - set(RANKS))}"


def test_imports_point_down_the_flow() -> None:
    upward = []
    for module, targets in _imports(_modules()).items():
        if _room(module) in ("diffinfer", "models"):
            continue  # the package's front door re-exports from every room
        for target in targets:
            a, b = _room(module), _room(target)
            if a != b and b != "diffinfer" and RANKS[b] >= RANKS[a]:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_the_import_graph_has_no_cycles() -> None:
    graph = _imports(_modules())
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_no_private_name_is_imported_across_modules() -> None:
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffinfer"):
                found += [f"{name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    assert not found, found


def test_modules_are_short_or_say_why() -> None:
    long = {name: sum(1 for _ in path.open()) for name, path in _modules().items()}
    over = {name: n for name, n in long.items() if n > MAX_LINES and name not in LONG_MODULES}
    assert not over, f"over {MAX_LINES} lines: {over}"
    stale = [name for name in LONG_MODULES if long.get(name, 0) <= MAX_LINES]
    assert not stale, f"no longer long, drop from LONG_MODULES: {stale}"


def test_the_build_lists_every_package_and_maps_models() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert set(setuptools["packages"]) == folders | {"diffinfer.models"}
    assert setuptools["package-dir"]["diffinfer.models"] == "models"
    assert (ROOT / "models" / "__init__.py").is_file()
    assert not (PACKAGE / "models").exists()
