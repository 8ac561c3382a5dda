"""The house rules of docs/ARCHITECTURE.md, checked on the source: each step of the path
in its folder, layers that only import downwards, no import circles, modules a reader
can hold in their head. A new module that breaks one fails here, with the import or
the file that did it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# lowest first: a package may import its own layer and the ones before it, never after
LAYERS = [
    ("agent.config",),
    ("agent.store",),
    ("agent.rules",),
    ("agent.pbx",),
    ("agent.people",),
    ("agent.messages",),
    ("agent.calls",),
    ("agent.privacy",),
    ("agent.transports",),
    ("agent.reports",),
    ("agent.ops",),
    ("agent.daemon",),
    ("agent.lab",),
    ("agent.cli", "web"),
]
# the lab (a PBX in a directory, the demo, the modem emulator) is for people and tests
LAB_USERS = ("agent.cli", "agent.lab")
MAX_TOP_MODULES = 6
MAX_LINES = 1000
MAX_WEB_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> Iterator[Path]:
    for package in ("agent", "web"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def imports(path: Path) -> set[str]:
    """Every project module this file imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from agent.messages import outbox` imports the module agent.messages.outbox
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in ("agent", "web")}


GRAPH = {module_name(path): imports(path) for path in sources()}
MODULES = set(GRAPH)


def resolve(name: str) -> str | None:
    """The module an imported name is (a name imported from a module is that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add its folder to docs/ARCHITECTURE.md "
                         "and to LAYERS here")


def edges() -> Iterator[tuple[str, str]]:
    for module, names in GRAPH.items():
        for name in names:
            target = resolve(name)
            if target is not None and target != module and not module.startswith(
                    target + "."):  # a package's own __init__ is not an edge
                yield module, target


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        if module not in ("agent", "web"):
            layer(module)


def test_imports_only_go_down() -> None:
    upward = sorted(f"{a} imports {b}" for a, b in edges() if layer(b) > layer(a))
    assert upward == []


def test_only_the_cli_and_the_tests_use_the_lab() -> None:
    users = sorted(f"{a} imports {b}" for a, b in edges()
                   if b.startswith("agent.lab") and not a.startswith(LAB_USERS))
    assert users == []


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for a, b in edges():
        graph[a].add(b)
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module):], module]
            pytest.fail("import circle: " + " → ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_agent_folder_reads_as_the_steps_of_the_path() -> None:
    top = sorted(p.name for p in (ROOT / "agent").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
    folders = {p.name for p in (ROOT / "agent").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {"store", "rules", "pbx", "people", "messages", "calls", "privacy",
                       "transports", "reports", "ops", "lab"}


def test_modules_stay_small_enough_to_read() -> None:
    too_long = []
    for path in sources():
        lines = len(path.read_text().splitlines())
        limit = MAX_WEB_LINES if path.parts[len(ROOT.parts)] == "web" else MAX_LINES
        if lines > limit:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {limit})")
    assert too_long == []


def test_package_folders_import_nothing_on_their_own() -> None:
    # `import agent.pbx.agi` must stay light (the routing AGI's start-up budget), and a
    # folder's __init__ that imports its modules would hide the layers
    heavy = [str(p.relative_to(ROOT)) for p in (ROOT / "agent").rglob("__init__.py")
             if "transports" not in p.parts and imports(p)]
    assert heavy == []
