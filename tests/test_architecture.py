"""The layout's rules, checked: folders import one way (ARCHITECTURE.md), and each module's
`__all__` names only what exists and what some other module imports."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "gateway_client")
# Bottom to top. A unit (a folder of gateway/, or a module at its top) may import its own
# floor's units only where listed in SAME_FLOOR, and any unit on a lower floor.
FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "networks", "request_keys", "draining"}),
    frozenset({"config"}),
    frozenset({"storage", "telemetry", "limits"}),
    frozenset({"auth"}),
    frozenset({"proxy"}),
    frozenset({"ops", "forward_auth"}),
    # The HTTP/1.1 front: serves an app's requests, knows nothing of what they are.
    frozenset({"front"}),
    frozenset({"edge", "middleware", "appkeys", "parser_errors", "lane", "server", "app"}),
    frozenset({"cli"}),
    # The package's front door: the public API and `python -m gateway`.
    frozenset({"__init__", "__main__", "client"}),
)
SAME_FLOOR = {
    ("middleware", "edge"),
    ("app", "edge"),
    ("app", "middleware"),
    ("app", "appkeys"),
    ("server", "appkeys"),
    ("server", "parser_errors"),
    ("parser_errors", "edge"),
    ("lane", "edge"),
    ("app", "lane"),
}
FLOOR_OF = {unit: level for level, units in enumerate(FLOORS) for unit in units}


def _python_files(*roots: str) -> Iterator[Path]:
    for root in roots:
        yield from sorted((REPO / root).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(absolute module, imported names) for each import that runs (not TYPE_CHECKING-only)."""
    tree = ast.parse(path.read_text())
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    type_checking_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in type_checking_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module, [alias.name for alias in node.names]


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "gateway":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _gateway_edges() -> set[tuple[str, str, str]]:
    """(importing unit, imported unit, where) for every import between units of gateway/."""
    edges: set[tuple[str, str, str]] = set()
    for path in _python_files("gateway"):
        # A module at the top is its own unit (__init__ included); a folder is one unit.
        here = path.stem if path.parent == REPO / "gateway" else _unit(_module_name(path))
        assert here is not None
        for module, names in _runtime_imports(path):
            target = _unit(module)
            if target is None:
                continue
            targets = [target]
            if target == "__init__":  # `from . import x` names modules
                targets = names
            for unit in targets:
                if unit != here:
                    edges.add((here, unit, str(path.relative_to(REPO))))
    return edges


def test_every_unit_of_the_gateway_has_a_floor() -> None:
    units = {p.stem for p in (REPO / "gateway").glob("*.py")}
    units |= {p.name for p in (REPO / "gateway").iterdir() if (p / "__init__.py").exists()}
    assert units - FLOOR_OF.keys() == set(), "add the new unit to FLOORS and ARCHITECTURE.md"


def test_the_import_graph_sees_the_gateways_imports() -> None:
    # Guards the two checks below against passing on an empty graph.
    pairs = {(here, there) for here, there, _ in _gateway_edges()}
    assert {("app", "proxy"), ("proxy", "auth"), ("auth", "config"), ("cli", "app")} <= pairs


def test_no_unit_imports_one_above_it_or_beside_it() -> None:
    wrong = sorted(
        f"{where}: {here} (floor {FLOOR_OF[here]}) imports {there} (floor {FLOOR_OF[there]})"
        for here, there, where in _gateway_edges()
        if FLOOR_OF[there] > FLOOR_OF[here]
        or (FLOOR_OF[there] == FLOOR_OF[here] and (here, there) not in SAME_FLOOR)
    )
    assert wrong == []


def test_no_two_folders_import_each_other() -> None:
    pairs = {(here, there) for here, there, _ in _gateway_edges()}
    assert sorted(p for p in pairs if (p[1], p[0]) in pairs) == []


def _modules_with_all() -> list[str]:
    names = []
    for path in _python_files(*PACKAGES):
        if "__all__" in path.read_text():
            names.append(_module_name(path))
    return names


@pytest.mark.parametrize("module_name", _modules_with_all())
def test_all_names_only_what_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_every_exported_name_is_imported_somewhere_else() -> None:
    imported: dict[str, set[str]] = {}
    for path in _python_files(*PACKAGES, "tests", "bench", "upstream_demo"):
        here = _module_name(path)
        for _, names in _runtime_imports(path):
            for name in names:
                imported.setdefault(name, set()).add(here)
        # `from . import admin` then `admin.user_add`: a use through the module.
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                imported.setdefault(node.attr, set()).add(here)
    unused = []
    for module_name in _modules_with_all():
        module = importlib.import_module(module_name)
        public_api = module_name in PACKAGES  # the packages' front doors are for users
        for name in module.__all__:
            users = imported.get(name, set()) - {module_name}
            if not users and not public_api:
                unused.append(f"{module_name}.{name}")
    assert unused == [], "drop these from __all__, or they are dead code"


def test_the_python_client_loads_none_of_the_servers_dependencies() -> None:
    heavy = ["aiomysql", "aiosqlite", "redis", "prometheus_client", "argon2", "yaml", "gateway"]
    code = f"import sys, gateway_client; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.strip()
    assert loaded == ""
