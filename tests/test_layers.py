"""The package's layers: every import of weather_sr code points down the order, with no cycle.

Order (docs/architecture.md): core <- nn <- model <- {training, inference} <- evaluation <- demo
<- commands <- cli. ``data`` is used from ``model`` upwards and imports none of those layers. The
base utilities (errors, targets, write_errors, atomic, devices) import only ``errors``
(``atomic`` also ``targets`` and ``write_errors``); ``config`` also ``core`` (its torch-free option
rules, ``core.spectral_options``); ``core`` imports nothing of weather_sr but
``errors``, ``nn`` only ``core`` besides. Every import anywhere in a file counts, including
imports inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "weather_sr"

# layer of each top-level part of weather_sr; a module may import parts of a lower layer only,
# except where ALLOWED names a same-or-other-layer part explicitly
LAYER = {
    "__init__": 0, "errors": 0,
    "core": 1,
    "nn": 2,
    "atomic": 1, "runtime": 1, "targets": 1, "write_errors": 1, "devices": 1, "config": 2,
    "lock": 1,
    "distributed": 2,
    "data": 2,
    "model": 3,
    "training": 4, "inference": 4,
    "evaluation": 5,
    "demo": 6,
    "commands": 7,
    "cli": 8, "__main__": 9,
}
# what each part may import (besides itself): the layer rule made explicit where it is stricter
ONLY = {
    "__init__": set(),
    "errors": set(),
    "core": {"errors"},
    "nn": {"errors", "core"},
    "targets": {"errors"},
    "write_errors": {"errors"},
    "atomic": {"errors", "targets", "write_errors"},
    "devices": {"errors"},
    "lock": {"errors"},
    "distributed": {"errors", "devices"},
    "runtime": set(),
    "config": {"errors", "core"},
    "data": {"errors", "atomic", "targets", "write_errors"},
}


# parts that must never import another, whatever the layers say
NEVER = {"evaluation": {"training"}}  # scoring a checkpoint needs no training code


def part_of(module: str) -> str:
    """``weather_sr.core.loss`` -> ``core``; ``weather_sr`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["weather_sr", *parts])


def imports_of(path: Path) -> set[str]:
    """Every weather_sr module named by an import anywhere in the file (``from a import b`` gives
    ``a.b`` when that is a module, else ``a``)."""
    return imports_in(ast.parse(path.read_text(encoding="utf-8")))


def lazy_imports_of(path: Path) -> set[str]:
    """The weather_sr modules imported inside the file's module-level ``__getattr__`` (PEP 562)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            found |= imports_in(node)
    return found


def imports_in(tree: ast.AST) -> set[str]:
    """:func:`imports_of` for a parsed file or a node of one."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "weather_sr"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "weather_sr":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if MODULES.get(sub) else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add("<relative import>")
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
# The one exception to "the root package imports nothing": its module ``__getattr__`` imports the
# Python API on first use (``weather_sr.load_model``, ``weather_sr.downscale``,
# ``weather_sr.score``). That runs after
# the package is initialised, so it is neither an import-time dependency nor an edge of an import
# cycle. Only these lazy imports are dropped; any other import in the root still counts.
LAZY = {"weather_sr": {"weather_sr.inference.api", "weather_sr.evaluation.score_files"}}


def graph_imports(name: str, path: Path) -> set[str]:
    """The imports of module ``name`` that the layer and cycle rules check."""
    lazy = lazy_imports_of(path) - LAZY.get(name, set())  # not allowed lazily: counts
    return (_outside_getattr(path) | lazy) - {name}


def _outside_getattr(path: Path) -> set[str]:
    """Imports of the file outside its module-level ``__getattr__``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tree.body = [n for n in tree.body
                 if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    return imports_in(tree)


GRAPH = {name: graph_imports(name, path) for name, path in MODULES.items()}


def test_every_part_has_a_layer() -> None:
    parts = {part_of(m) for m in MODULES}
    assert parts <= set(LAYER), f"new top-level parts need a layer: {parts - set(LAYER)}"


def test_no_relative_imports() -> None:
    bad = [m for m, deps in GRAPH.items() if "<relative import>" in deps]
    assert not bad, f"use absolute imports in {bad}"


def violations(module: str, deps: set[str]) -> list[str]:
    """The imports of ``module`` that break the layer rules, each as a sentence."""
    here, bad = part_of(module), []
    for dep in sorted(deps):
        there = part_of(dep)
        if there == here:
            continue
        if there in NEVER.get(here, ()):
            bad.append(f"{module} imports {dep}: {here} must not import {there}")
        elif here in ONLY and there not in ONLY[here]:
            bad.append(f"{module} imports {dep}: {here} may import only {sorted(ONLY[here])}")
        elif here not in ONLY and LAYER[there] >= LAYER[here]:
            bad.append(f"{module} imports {dep}: {here} (layer {LAYER[here]}) may not import "
                       f"{there} (layer {LAYER[there]})")
    return bad


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    assert not violations(module, GRAPH[module])


def test_no_import_cycles() -> None:
    """Depth-first search for a cycle among modules (package ``__init__`` files included)."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH.get(node, ())):
            if dep not in MODULES:
                continue
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """A lazy import inside a function is found, and imports against the order are flagged."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from weather_sr.evaluation import metrics\n    return metrics\n")
    deps = imports_of(path)
    assert deps == {"weather_sr.evaluation.metrics"}
    assert violations("weather_sr.core.loss", deps)
    assert violations("weather_sr.training.loop", {"weather_sr.inference.ensemble"})
    assert violations("weather_sr.data.pairs", {"weather_sr.model.loading"})
    assert not violations("weather_sr.demo", deps)


def test_root_imports_only_the_api_and_only_lazily(tmp_path: Path) -> None:
    """The root package's only weather_sr import is the API, inside ``__getattr__``; an eager
    import there, or another lazy one, is a violation (and would be a cycle edge)."""
    root = MODULES["weather_sr"]
    assert lazy_imports_of(root) == LAZY["weather_sr"]
    assert GRAPH["weather_sr"] == set()
    eager = tmp_path / "eager.py"
    eager.write_text("from weather_sr.inference import api\n\n\ndef __getattr__(name):\n"
                     "    from weather_sr.inference import api\n    return api\n")
    assert graph_imports("weather_sr", eager) == {"weather_sr.inference.api"}
    assert violations("weather_sr", graph_imports("weather_sr", eager))
    other = tmp_path / "other.py"
    other.write_text("def __getattr__(name):\n    from weather_sr import cli\n    return cli\n")
    assert violations("weather_sr", graph_imports("weather_sr", other))


def test_import_weather_sr_stays_cheap() -> None:
    """``import weather_sr`` loads neither torch nor xarray; the API attributes still resolve."""
    import subprocess
    import sys

    code = ("import sys, weather_sr; assert 'torch' not in sys.modules, 'torch'; "
            "assert 'xarray' not in sys.modules, 'xarray'; "
            "from weather_sr import __version__; "
            "assert callable(weather_sr.downscale) and callable(weather_sr.load_model) "
            "and callable(weather_sr.score)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
