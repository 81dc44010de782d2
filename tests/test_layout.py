"""The package layout is the architecture: layers import downwards only, and nothing cycles.

Every import statement in lossbench counts, including those inside functions and under
``if TYPE_CHECKING``: an import hidden in a function is still a dependency, and a cycle
through one is still a cycle (it only fails later, at the first call).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lossbench"

# bottom to top: a package may import its own modules and those of lower layers only
LAYERS = (
    ("core",),  # config, field checks, metric catalogue, results-directory schema, escaping, IO
    ("losses", "data"),  # the registry; corpora, tokenizers, teachers
    ("checks", "models"),  # property checks of losses; the architectures a run trains
    ("train",),  # one run: loop, evaluation, gradients, checkpoints, observers
    ("suite",),  # a suite file: load, preflight, tuning, scale ladders, claims
    ("store",),  # a results directory: run folders, tables, experiments, live metrics
    ("sweep",),  # running a suite: attempts, executors, trackers, dry run, status
    ("analysis",),  # statistics, scores, diagnostics, fits: pure functions of the tables
    ("report",),  # the report's documents, figures and formats
    ("cli",),  # the `lossbench` command
)
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every lossbench module ``path`` imports (a name imported from a package counts as
    that submodule when it is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lossbench")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("lossbench"):
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & modules
            found |= subs or {target}
    return found - {name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) & modules for p in paths}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in g.items():
        own = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if own is None or theirs is None or own == theirs:
                continue
            if RANK[theirs] >= RANK[own]:
                bad.append(f"{module} imports {target} ({own} may not import {theirs})")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_belongs_to_a_layer():
    loose = [m for m in graph() if layer_of(m) is None
             and m not in ("lossbench", "lossbench.__main__")]
    assert loose == [], f"modules outside the layer packages: {loose}"


def test_layers_import_downwards_only():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


@pytest.mark.parametrize("edges,expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder(edges, expected):
    assert cycles(edges) == expected


def test_upward_import_finder():
    g = {"lossbench.core.config": {"lossbench.models.gpt"}, "lossbench.cli.run": {"lossbench.core.config"}}
    assert upward_imports(g) == ["lossbench.core.config imports lossbench.models.gpt "
                                 "(core may not import models)"]
