"""The package's import graph, read from the source: no cycles, no library -> CLI, layers only downward.

An import counts wherever it is written (module level or inside a function:
a lazy import is still a dependency), except under ``if TYPE_CHECKING:``,
which never runs. ``from pkg import name`` depends on ``pkg/name.py`` when
that module exists, else on ``pkg/__init__.py``. The layer order is the one
``docs/design/layout.md`` draws.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "clinical_ner"
PACKAGE = PACKAGE_DIR.name

# Lowest first; a module may import its own layer and those below it. A
# name is a folder or module under the package; the longest that contains
# a module gives its layer. Keep in step with docs/design/layout.md.
LAYERS = [
    {"errors", "version", "quiet", "untrusted_json", "artifacts", "pretrained"},
    {"text", "config"},
    {"model", "vectors", "export.signatures", "export.saved_model"},
    {"formats"},
    {"annotators"},
    {"evaluation"},
    {"training"},
    {"export"},
    {"batch", "serving", "integrations"},
    {"cli", "__main__"},
]
# The command line: cli/, and __main__.py, which makes `python -m clinical_ner` run it.
COMMAND_LINE = {"cli", "__main__"}


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(node: ast.AST, module: str, is_package: bool,
                    modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        kept = package[:len(package) - node.level + 1]
        base = ".".join(kept + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names]


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see the module docstring for what counts)."""
    modules = module_files(package_dir)
    package = package_dir.name

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        never_run = {id(inner) for node in ast.walk(tree)
                     if isinstance(node, ast.If) and _is_type_checking(node)
                     for statement in node.body for inner in ast.walk(statement)}
        for node in ast.walk(tree):
            if id(node) in never_run:
                continue
            for name in _imported_names(node, module, path.name == "__init__.py", modules):
                target = owner(name) if name.split(".")[0] == package else None
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so that a deep graph cannot hit the recursion limit.
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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
    return sorted(found)


def folder(module: str) -> str:
    """The top-level folder (or module) of the package that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int:
    relative = module.split(".")[1:]
    for length in range(len(relative), 0, -1):
        name = ".".join(relative[:length])
        for level, names in enumerate(LAYERS):
            if name in names:
                return level
    raise AssertionError(f"{module} has no layer in LAYERS "
                         "(tests/test_import_graph.py, docs/design/layout.md)")


def climbs(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports of a module in a higher layer (the package's ``__init__`` is the top)."""
    return {(module, target) for module, targets in graph.items() if module != PACKAGE
            for target in targets if target != PACKAGE and layer_of(target) > layer_of(module)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_DIR)


def test_the_package_has_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_library_module_imports_the_cli(graph):
    cli = f"{PACKAGE}.cli"
    offenders = sorted(f"{module} -> {target}" for module, targets in graph.items()
                       if folder(module) not in COMMAND_LINE
                       for target in targets if folder(target) in COMMAND_LINE)
    assert not offenders, "library modules importing the CLI:\n" + "\n".join(offenders)
    assert any(folder(target) != "cli" for target in graph[cli])
    # Importing __main__ would run the command.
    assert not [module for module, targets in graph.items() if f"{PACKAGE}.__main__" in targets]


def test_imports_only_go_down_the_layers(graph):
    found = sorted(climbs(graph))
    assert not found, ("imports of a higher layer (see docs/design/layout.md):\n"
                       + "\n".join(f"{module} -> {target}" for module, target in found))


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
        "from .. import a\n")
    (package / "c.py").write_text("import pkg.sub.b\n")
    found = import_graph(package)
    assert found["pkg.a"] == {"pkg.sub.b"}
    assert found["pkg.sub.b"] == {"pkg.a"}
    assert found["pkg.c"] == {"pkg.sub.b"}
    assert cycles(found) == [["pkg.a", "pkg.sub.b"]]
