"""The folder tree is the architecture: layers import only downwards, and nothing imports in a circle
(issue 26).

Read from the source with ``ast`` (every import, also those inside functions, counts: a lazy import
is still a dependency); ``if TYPE_CHECKING:`` imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "edgepress"

# Bottom to top; a module may import its own layer and those below it.
LAYERS = [
    {"errors", "distributed"},  # leaves: the error types; which process of a launcher this is
    {"recipe"},  # sections, the stage list, loading and messages
    {"tasks"},  # one object per task: examples from raw rows, labels, scores, model head
    {"data"},  # sources -> raw rows -> the task's examples -> splits; tokenization
    {"models", "metrics", "encoders"},  # loading and saving; scores; where encoders keep heads and FFNs
    {"running"},  # pipeline, run folders, lock, summary
    {"export", "web"},  # web: transformers.js-ready folders (export and quantize write them), the browser and its set-up
    {"compress"},  # training/, pruning/, quantization/ (quantization reads export's helpers)
    {"bench"},
    {"search"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every edgepress module ``path`` imports (``from pkg import module`` names the module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edgepress"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            if not base.startswith("edgepress"):
                continue
            submodules = {f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}")}
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in ``base`` itself
                found.add(base)
    return found


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent / dotted.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself (__version__)
        return -1
    return LAYER_OF[parts[1]]


def test_every_top_level_name_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())}
    names -= {"__init__"}
    assert names == set(LAYER_OF), "a new top-level module or package needs a place in LAYERS"


def test_no_two_top_level_names_share_a_prefix():
    names = sorted(LAYER_OF)
    prefixes = [n.strip("_").split("_")[0] for n in names]
    assert len(set(prefixes)) == len(prefixes), names


def test_imports_run_downwards():
    upward = [
        f"{module} (layer {layer(module)}) imports {imported} (layer {layer(imported)})"
        for module, deps in sorted(graph().items())
        for imported in sorted(deps)
        if layer(imported) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_running_never_imports_the_stages():
    for module, deps in graph().items():
        if module.startswith("edgepress.running"):
            assert not {d for d in deps if d.split(".")[1:2] in (["compress"], ["export"], ["bench"], ["search"])}, module


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError(" -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
