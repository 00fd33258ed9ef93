"""The layer contract of DESIGN.md ("Layers (checked in CI)"), enforced by reading the source.

Bottom up: errors/atomic/registry -> runtime/ -> data/ -> models/ -> export/ -> calibration/
-> scale/ -> cli/, demo.py. A module imports only from its own layer or below, never in
a circle, and a layer uses only the third-party packages it may (errors/atomic/registry:
the standard library; runtime/: never torch; data/: numpy and PIL).

Every `.py` file of the package is parsed with `ast` -- nothing is imported, so the check
needs no optional package and sees what a run would only hit on some code path: imports
inside functions (lazy), under `if TYPE_CHECKING:`, relative imports, `from mmedge.x import
submodule`, and string constants that name a package module (what `mmedge.registry.Registry`
imports by name). Cycles are looked for among import statements; a string reference is a
registry's plugin table and is held to the layer order only.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository root is the package `mmedge`
PACKAGE = "mmedge"
TORCH = frozenset({"torch", "torchvision", "torchaudio"})


@dataclass(frozen=True)
class Layer:
    name: str
    modules: Tuple[str, ...]  # a module belongs to the layer of its longest prefix here ("mmedge": only itself)
    third_party: Optional[FrozenSet[str]] = None  # the only third-party packages allowed (None: any)
    forbidden: FrozenSet[str] = frozenset()  # third-party packages never allowed


# Bottom up, as DESIGN.md draws them. `mmedge` itself (the package __init__) is the bottom layer.
LAYERS: Tuple[Layer, ...] = (
    Layer("errors/atomic/registry", ("mmedge", "mmedge.errors", "mmedge.atomic", "mmedge.registry",
                                     "mmedge.archive"), third_party=frozenset()),
    Layer("runtime", ("mmedge.runtime",), forbidden=TORCH),
    Layer("data", ("mmedge.data",), third_party=frozenset({"numpy", "PIL"})),
    Layer("models", ("mmedge.models",)),
    Layer("export", ("mmedge.export",)),
    Layer("calibration", ("mmedge.calibration",)),
    Layer("scale", ("mmedge.scale",)),
    Layer("cli/demo", ("mmedge.cli", "mmedge.demo", "mmedge.__main__")),
)

# Known breaches in files this change could not touch: (importer, imported module) edges
# excused from the layer order and from the cycle check. Each entry is a debt with its fix;
# the test fails once an entry no longer occurs, so the list only shrinks. Remove an entry
# together with the import it excuses.
ALLOWED: FrozenSet[Tuple[str, str]] = frozenset({
})


@dataclass(frozen=True)
class Import:
    """One import of a module: where it is written and what it names."""

    importer: str
    path: Path
    line: int
    target: str  # a package module (mmedge.x.y) or a third-party top-level name
    # "import" (module level), "lazy import" (in a function), "type-checking import" (under
    # `if TYPE_CHECKING:`), "string reference" (a string constant naming the module)
    kind: str

    def where(self) -> str:
        return f"{self.importer} ({self.path}:{self.line}, {self.kind})"


# ------------------------------------------------------------------ reading the source
def package_modules(root: Path, package: str = PACKAGE) -> Dict[str, Path]:
    """Module name -> file of every module of the package rooted at `root` (folders with __init__.py)."""
    found: Dict[str, Path] = {}

    def walk(folder: Path, name: str) -> None:
        for f in sorted(folder.glob("*.py")):
            found[name if f.stem == "__init__" else f"{name}.{f.stem}"] = f
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
            walk(sub, f"{name}.{sub.name}")

    walk(root, package)
    return found


def _is_stdlib(name: str) -> bool:
    names = getattr(sys, "stdlib_module_names", None)  # Python 3.10+
    if names is not None:
        return name in names
    if name in sys.builtin_module_names:
        return True
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return False
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    origin = Path(spec.origin).resolve()
    return stdlib in origin.parents and "site-packages" not in origin.parts


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, is_package: bool, modules: Iterable[str], package: str) -> None:
        self.module, self.path, self.package = module, path, package
        self.here = module if is_package else module.rpartition(".")[0]
        self.modules = set(modules)
        self.depth = 0  # functions around the node
        self.typing_only = 0  # `if TYPE_CHECKING:` blocks around the node
        self.found: Dict[Import, None] = {}  # ordered set: `from m import a, b` is one import of m

    def _add(self, node: ast.AST, target: str, by_name: bool = False) -> None:
        kind = ("string reference" if by_name else "type-checking import" if self.typing_only
                else "lazy import" if self.depth else "import")
        self.found[Import(self.module, self.path, node.lineno, target, kind)] = None

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self.visit(test)
        self.typing_only += 1
        for child in node.body:
            self.visit(child)
        self.typing_only -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.here.split(".")
            if node.level - 1 >= len(parts):
                raise ValueError(f"{self.path}:{node.lineno}: relative import above the package")
            base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base.split(".")[0] != self.package:
            self._add(node, base)
            return
        for alias in node.names:  # `from mmedge.x import y`: y may be a submodule
            sub = f"{base}.{alias.name}"
            self._add(node, sub if sub in self.modules else base)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and node.value in self.modules and node.value != self.module:
            self._add(node, node.value, by_name=True)


def imports_of(root: Path, package: str = PACKAGE) -> Tuple[Dict[str, Path], List[Import]]:
    modules = package_modules(root, package)
    found: List[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        c = _Collector(name, path.relative_to(root), path.name == "__init__.py", modules, package)
        c.visit(tree)
        found += list(c.found)
    return modules, found


# ------------------------------------------------------------------ the contract
def layer_of(module: str, layers: Tuple[Layer, ...] = LAYERS) -> Optional[int]:
    best, best_len = None, -1
    for i, layer in enumerate(layers):
        for prefix in layer.modules:
            inside = "." in prefix and module.startswith(prefix + ".")  # the bare package name is no prefix
            if (module == prefix or inside) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def check_layers(root: Path, package: str = PACKAGE, layers: Tuple[Layer, ...] = LAYERS,
                 allowed: FrozenSet[Tuple[str, str]] = frozenset()) -> List[str]:
    """Every breach of the contract, one precise line each (empty: the tree keeps it)."""
    modules, found = imports_of(root, package)
    problems: List[str] = []
    for m in modules:
        if layer_of(m, layers) is None:
            problems.append(f"{m} ({modules[m].relative_to(root)}) belongs to no layer: add it to LAYERS")
    seen_allowed = set()
    edges: Dict[str, Dict[str, Import]] = {m: {} for m in modules}
    for imp in found:
        src = layer_of(imp.importer, layers)
        if src is None:
            continue
        if imp.target.split(".")[0] == package:
            if imp.target not in modules:
                problems.append(f"{imp.where()} imports {imp.target}, which is not a module of the package")
                continue
            if (imp.importer, imp.target) in allowed:  # excused from the layer order and the cycles
                seen_allowed.add((imp.importer, imp.target))
                continue
            dst = layer_of(imp.target, layers)
            if dst is not None and dst > src:
                problems.append(f"upward import: {imp.where()} imports {imp.target}: layer "
                                f"{layers[src].name!r} may not import from the higher layer {layers[dst].name!r}")
            if imp.kind != "string reference" and imp.target != imp.importer:
                edges[imp.importer].setdefault(imp.target, imp)
            continue
        top = imp.target.split(".")[0]
        if not top or _is_stdlib(top):
            continue
        layer = layers[src]
        if top in layer.forbidden or (layer.third_party is not None and top not in layer.third_party):
            rule = ("may use the standard library only" if layer.third_party == frozenset() else
                    f"may use only {', '.join(sorted(layer.third_party))}" if layer.third_party is not None
                    else f"may never use {', '.join(sorted(layer.forbidden))}")
            problems.append(f"forbidden third-party import: {imp.where()} imports {imp.target}: "
                            f"layer {layer.name!r} {rule}")
    for entry in sorted(allowed - seen_allowed):
        problems.append(f"allow-list entry {entry} no longer occurs: remove it from ALLOWED")
    problems += [f"import cycle: {describe_cycle(c, edges)}" for c in cycles(edges)]
    return problems


def cycles(edges: Dict[str, Dict[str, Import]]) -> List[List[str]]:
    """One shortest cycle per strongly connected component of more than one module."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack = set()
    components: List[List[str]] = []

    def connect(v: str) -> None:  # Tarjan; the module graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [_shortest_cycle(comp, edges) for comp in sorted(components)]


def _shortest_cycle(component: List[str], edges: Dict[str, Dict[str, Import]]) -> List[str]:
    start, members = component[0], set(component)
    parent: Dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth first from `start` back to itself, inside the component
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1] + [start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def describe_cycle(path: List[str], edges: Dict[str, Dict[str, Import]]) -> str:
    steps = [f"{a} ({edges[a][b].path}:{edges[a][b].line}, {edges[a][b].kind}) -> " for a, b in zip(path, path[1:])]
    return "".join(steps) + path[-1]


# ------------------------------------------------------------------ the package itself
def test_package_keeps_its_layers() -> None:
    problems = check_layers(ROOT, allowed=ALLOWED)
    assert not problems, "DESIGN.md 'Layers (checked in CI)' is broken:\n  " + "\n  ".join(problems)


def test_every_declared_package_has_a_layer() -> None:
    """The packages pyproject.toml ships are the ones this test reads (none is missed)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    found = {m for m, p in package_modules(ROOT).items() if p.name == "__init__.py"}
    assert found == set(declared)
    assert all(layer_of(p) is not None for p in declared)


# ------------------------------------------------------------------ the checker catches breaches
def _tree(tmp_path: Path, files: Dict[str, str]) -> Path:
    """A synthetic package `mmedge` in tmp_path from {relative path: source}."""
    for rel, src in {"__init__.py": "", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        for parent in p.relative_to(tmp_path).parents:
            (tmp_path / parent / "__init__.py").touch()
        p.write_text(src, encoding="utf-8")
    return tmp_path


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "errors.py": "import os\n",
        "runtime/manifest.py": "import numpy\nfrom mmedge.errors import x\n",
        "runtime/pipelines.py": "from .manifest import read\nfrom . import manifest\n",
        "models/zoo.py": "import torch\nfrom mmedge.runtime import manifest\n",
        "export/onnx.py": "from ..models import zoo\n",
        "calibration/tensorrt.py": "def f():\n    from mmedge.export import onnx\n",
        "cli.py": "import mmedge.calibration.tensorrt\n",
    })
    assert check_layers(root) == []


def test_top_level_upward_import_is_named_with_line_and_layers(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"models/train.py": "import os\n\nfrom mmedge.calibration.eval import score\n",
                            "calibration/eval.py": ""})
    assert check_layers(root) == [
        "upward import: mmedge.models.train (models/train.py:3, import) imports mmedge.calibration.eval: "
        "layer 'models' may not import from the higher layer 'calibration'"]


@pytest.mark.parametrize("source, target, kind", [
    ("def f():\n    from mmedge.export.tensorrt import build\n", "mmedge.export.tensorrt", "lazy import"),
    ("class A:\n    def f(self):\n        import mmedge.export.tensorrt as t\n", "mmedge.export.tensorrt",
     "lazy import"),
    ("from ...export import tensorrt\n", "mmedge.export.tensorrt", "import"),  # relative, a submodule
    ("from ...export.tensorrt import build\n", "mmedge.export.tensorrt", "import"),
    ("from mmedge import export\n", "mmedge.export", "import"),  # a package, by `from mmedge import`
    ("import typing\nif typing.TYPE_CHECKING:\n    from mmedge.export.tensorrt import Plan\n",
     "mmedge.export.tensorrt", "type-checking import"),
    ("PLUGINS = ('mmedge.export.tensorrt',)\n", "mmedge.export.tensorrt", "string reference"),  # a registry's
])
def test_every_import_form_is_seen(tmp_path: Path, source: str, target: str, kind: str) -> None:
    root = _tree(tmp_path, {"runtime/backends/trt.py": source, "export/tensorrt.py": ""})
    line = source.rstrip("\n").count("\n") + 1  # the import is the last line
    assert check_layers(root) == [
        f"upward import: mmedge.runtime.backends.trt (runtime/backends/trt.py:{line}, {kind}) imports {target}: "
        "layer 'runtime' may not import from the higher layer 'export'"]


def test_a_cycle_is_reported_with_its_path(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "export/tensorrt.py": "def build():\n    from mmedge.export.cache import retarget\n",
        "export/cache.py": "from mmedge.export import jetson\n",
        "export/jetson.py": "import os\nimport mmedge.export.tensorrt\n",
    })
    assert check_layers(root) == [
        "import cycle: mmedge.export.cache (export/cache.py:1, import) -> mmedge.export.jetson (export/jetson.py:2, "
        "import) -> mmedge.export.tensorrt (export/tensorrt.py:2, lazy import) -> mmedge.export.cache"]


STDLIB_ONLY = "layer 'errors/atomic/registry' may use the standard library only"


@pytest.mark.parametrize("rel, source, rule", [
    ("errors.py", "import numpy as np\n", STDLIB_ONLY),
    ("atomic.py", "def f():\n    import rich.console\n", STDLIB_ONLY),
    ("runtime/decode.py", "def f():\n    import torch\n",
     "layer 'runtime' may never use torch, torchaudio, torchvision"),
    ("data/shapes.py", "import scipy.ndimage\n", "layer 'data' may use only PIL, numpy"),
])
def test_forbidden_third_party_imports(tmp_path: Path, rel: str, source: str, rule: str) -> None:
    problems = check_layers(_tree(tmp_path, {rel: source}))
    assert len(problems) == 1 and problems[0].startswith("forbidden third-party import: ")
    assert problems[0].endswith(rule)


def test_unknown_module_and_unlayered_module_are_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"export/onnx.py": "from mmedge.export.gone import f\n", "tools/x.py": ""})
    assert check_layers(root) == [
        "mmedge.tools (tools/__init__.py) belongs to no layer: add it to LAYERS",
        "mmedge.tools.x (tools/x.py) belongs to no layer: add it to LAYERS",
        "mmedge.export.onnx (export/onnx.py:1, import) imports mmedge.export.gone, "
        "which is not a module of the package"]


def test_allow_list_excuses_an_edge_and_goes_stale(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a", {"export/jetson.py": "def f():\n    from mmedge.calibration import tensorrt\n",
                            "calibration/tensorrt.py": "from mmedge.export import jetson\n"})
    edge = ("mmedge.export.jetson", "mmedge.calibration.tensorrt")
    assert check_layers(root, allowed=frozenset({edge})) == []  # nor a cycle through the excused edge
    same_layer = ("mmedge.calibration.tensorrt", "mmedge.calibration.data")  # a cycle can be excused too
    cyclic = _tree(tmp_path / "b", {"calibration/data.py": "def f():\n    from mmedge.calibration import tensorrt\n",
                            "calibration/tensorrt.py": "from mmedge.calibration import data\n"})
    assert check_layers(cyclic, allowed=frozenset({same_layer})) == []
    assert check_layers(cyclic) == [
        "import cycle: mmedge.calibration.data (calibration/data.py:2, lazy import) -> "
        "mmedge.calibration.tensorrt (calibration/tensorrt.py:1, import) -> mmedge.calibration.data"]
    stale = ("mmedge.models.zoo", "mmedge.export.onnx")
    assert check_layers(root, allowed=frozenset({edge, stale})) == [
        f"allow-list entry {stale} no longer occurs: remove it from ALLOWED"]
