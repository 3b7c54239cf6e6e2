"""The package's import structure (issues 14 and 18): no import cycles and no layer breaks.

Every module under ``mvc/`` is parsed with ``ast``; imports inside functions count (a lazy
import is still a dependency), imports under ``if TYPE_CHECKING:`` do not (they never run).
Layers: cli -> api -> domain -> formats -> dvcstore / gitstore; only the DVC adapter
(``mvc/dvcstore.py`` and the ``mvc/dvc*.py`` modules built on it) imports dvc, only
``mvc/gitstore.py`` imports git, and the CLI talks to the library through ``mvc.api`` (plus
``mvc.errors`` and ``mvc.progress``) only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mvc"
CLI_MAY_IMPORT = ("mvc.api", "mvc.errors", "mvc.progress")
# Lazy module objects in mvc/api.py (``_lazy("mvc.refs")``) are imports as well.
LAZY_CALLS = ("_lazy", "import_module")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
# The DVC adapter: its core, mvc/dvcstore.py, and the modules that build on it (mvc/dvc*.py).
DVC_ADAPTER = tuple(m for m in MODULES if m.startswith("mvc.dvc"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` except the bodies of ``if TYPE_CHECKING:`` blocks (their ``else`` counts)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield stmt
                yield from _walk(stmt)
            continue
        yield child
        yield from _walk(child)


def _resolve(module: str, level: int, name: str | None, is_package: bool) -> str:
    """The absolute name of a relative import ``from .name import ...`` in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports(module: str) -> set[str]:
    """The absolute module names ``module`` imports at run time (a ``from pkg import mod`` names ``pkg.mod``)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module, is_package)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found |= submodules
            if len(submodules) < len(node.names):  # names defined in ``base`` itself
                found.add(base)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) in LAZY_CALLS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def internal_imports(module: str) -> set[str]:
    """The mvc modules ``module`` imports (a package's ``__init__`` counts only when imported itself)."""
    return {name for name in imports(module) if name in MODULES and name != module}


GRAPH = {m: internal_imports(m) for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: one per strongly connected component (Tarjan), as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(graph, c) for c in components]


def _closed_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``component``, for the failure message."""
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & set(component)):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def layer(module: str) -> str:
    if module.startswith("mvc.cli"):
        return "cli"
    if module == "mvc.api":
        return "api"
    if module in ("mvc", "mvc.__main__"):
        return "entry"
    if module.startswith("mvc.integrations"):
        return "integrations"  # training callbacks: above the API, which they call
    return "domain"


# ---------------------------------------------------------------------------- the checker itself


def test_the_checker_sees_lazy_function_level_imports_and_skips_type_checking_blocks(tmp_path: Path) -> None:
    assert "mvc.sync" in imports("mvc.api")  # a _lazy("mvc.sync") module object
    assert "dvc.repo" in imports("mvc.dvcstore")  # imported inside functions only
    assert "mvc.cli.core" in imports("mvc.cli.main")  # from mvc.cli import core
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    code = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mvc.cli\nelse:\n    import json\n"
    nodes = list(_walk(ast.parse(code)))
    assert not any(isinstance(n, ast.Import) and n.names[0].name == "mvc.cli" for n in nodes)
    assert any(isinstance(n, ast.Import) and n.names[0].name == "json" for n in nodes)


# ---------------------------------------------------------------------------- the rules


def test_no_import_cycles_between_mvc_modules() -> None:
    found = cycles(GRAPH)

    assert found == [], "import cycles: " + "; ".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "cli"))
def test_cli_modules_import_only_the_api_errors_progress_and_the_cli(module: str) -> None:
    bad = sorted(
        name
        for name in imports(module)
        if (name == "mvc" or name.startswith("mvc.")) and not name.startswith("mvc.cli") and name not in CLI_MAY_IMPORT
    )

    assert bad == [], f"{module} imports {bad}: go through mvc.api"


@pytest.mark.parametrize(
    ("library", "owners"), [("dvc", DVC_ADAPTER), ("dvc_data", DVC_ADAPTER), ("dvc_objects", DVC_ADAPTER), ("git", ("mvc.gitstore",))]
)
def test_only_the_adapter_imports_its_library(library: str, owners: tuple[str, ...]) -> None:
    users = sorted(m for m in MODULES if any(n == library or n.startswith(library + ".") for n in imports(m)))

    assert set(users) <= set(owners), f"{library} is imported by {users}; only {list(owners)} may"


def test_the_dvc_adapters_core_imports_none_of_the_modules_built_on_it() -> None:
    """``mvc/dvcstore.py`` (open, lock, translate errors, add, push, pull) is the adapter's
    ground floor: the other ``mvc/dvc*.py`` modules import it, never the reverse."""
    upward = sorted(n for n in imports("mvc.dvcstore") if n in DVC_ADAPTER and n != "mvc.dvcstore")

    assert "mvc.dvcstore" in DVC_ADAPTER and upward == [], f"mvc.dvcstore imports {upward}"


@pytest.mark.parametrize("module", DVC_ADAPTER)
def test_the_dvc_adapter_imports_no_mvc_module_above_it(module: str) -> None:
    below = ("mvc.documents", "mvc.errors", "mvc.progress", "mvc.transfer", *DVC_ADAPTER)
    bad = sorted(n for n in internal_imports(module) if n not in below)

    assert bad == [], f"{module} imports {bad}: an adapter serves the domain modules, never calls them"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "domain"))
def test_domain_modules_never_import_the_cli_or_the_api(module: str) -> None:
    bad = sorted(n for n in imports(module) if n in ("mvc", "mvc.api") or n.startswith(("mvc.cli", "mvc.integrations")))

    assert bad == [], f"{module} imports {bad}: the library must not depend on the layers above it"


def test_the_api_makes_domain_calls_never_store_calls() -> None:
    """``mvc/api.py`` opens the workspace and makes one domain call (issue 18): the stores
    (the ``dvc*`` modules, ``gitstore``) are the domain modules' business."""
    stores = sorted(n for n in imports("mvc.api") if n in (*DVC_ADAPTER, "mvc.gitstore"))

    assert stores == [], f"mvc.api imports {stores}: move the call into a domain module"
