"""The package's import graph: no cycles, no import pointing up a layer, no imports hidden in functions.

Read statically from the source (``ast``), so an import inside a function counts as much as one at
the top. The layers, lowest first, are :data:`LAYERS`; a module may import modules of its own layer
or of lower ones. The only imports of fastmtl modules allowed inside functions are the CLI's lazy
ones, kept for start-up speed and listed in ``fastmtl.cli.LAZY_IMPORTS``.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

import fastmtl
from fastmtl.cli import LAZY_IMPORTS

PACKAGE = Path(fastmtl.__file__).parent

# lowest first; a name stands for the module and everything below it
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("fastmtl", "fastmtl.errors", "fastmtl.paths", "fastmtl.files", "fastmtl.fields", "fastmtl.checkpoint",
     "fastmtl.optim"),
    ("fastmtl.kernels",),
    ("fastmtl.layers", "fastmtl.nn"),
    ("fastmtl.models", "fastmtl.data", "fastmtl.weighting"),
    ("fastmtl.losses", "fastmtl.metrics"),
    ("fastmtl.tasks",),
    ("fastmtl.transforms",),
    ("fastmtl.config",),
    ("fastmtl.runtime",),
    ("fastmtl.restore", "fastmtl.step", "fastmtl.rundir"),
    ("fastmtl.evaluate", "fastmtl.predict", "fastmtl.export", "fastmtl.compare"),
    ("fastmtl.train",),
    ("fastmtl.sweep", "fastmtl.perf", "fastmtl.doctor"),
    ("fastmtl.cli", "fastmtl.__main__"),
)


def module_files() -> Dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package (a package is its ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = module_files()


def _owner(name: str) -> str:
    """The module a dotted import name refers to (``fastmtl.x.y.func`` -> ``fastmtl.x.y``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str) -> List[Tuple[str, bool]]:
    """``[(imported fastmtl module, inside a function?)]`` of ``module``; a submodule import also
    imports its parent packages, which Python runs first."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested |= {id(n) for n in ast.walk(node) if n is not node}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            if name.split(".")[0] != "fastmtl":
                continue
            target = _owner(name)
            if target != module:
                found.append((target, id(node) in nested))
    return found


IMPORTS = {m: imports_of(m) for m in MODULES}


def graph() -> Dict[str, Set[str]]:
    return {m: {t for t, _ in IMPORTS[m]} for m in MODULES}


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    assert rank is not None, f"{module} is in no layer of tests/test_import_graph.py: LAYERS"
    return rank


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_scanner_sees_relative_and_nested_imports():
    """The scanner itself: ``fastmtl.cli.flags`` imports ``fastmtl.config`` at the top (``from ..config``),
    ``fastmtl.cli.train`` imports ``fastmtl.train`` inside ``run``."""
    assert ("fastmtl.config", False) in imports_of("fastmtl.cli.flags")
    assert ("fastmtl.train", True) in imports_of("fastmtl.cli.train")
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_module_imports_a_module_above_its_layer():
    edges = graph()
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m in sorted(MODULES) for t in sorted(edges[m]) if layer_of(t) > layer_of(m)]
    assert upward == []


def test_fastmtl_imports_inside_functions_are_only_the_clis_listed_lazy_ones():
    hidden = sorted({(m, t) for m in MODULES for t, inside in IMPORTS[m] if inside})
    allowed = {(m, t) for m, t in hidden if m.startswith("fastmtl.cli") and t in LAZY_IMPORTS}
    assert [f"{m} imports {t} inside a function" for m, t in hidden if (m, t) not in allowed] == []


@pytest.mark.parametrize("name", LAZY_IMPORTS)
def test_every_listed_lazy_import_exists(name):
    assert name in MODULES, f"fastmtl.cli.LAZY_IMPORTS names {name}, which is not a module"
