"""The package's structure: imports go one way, the engine's modules in layers, and no
module grows past what a reader takes in (see docs/explanation/engine.md)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "django_workflows"

#: The engine's layers, top first: a module imports only from layers below its own.
ENGINE_LAYERS = [
    {"__init__", "core"},  # the package's surface (and the one-release re-exports)
    {"local", "djangoq", "sweeper"},  # backends and the cluster's sweeper thread
    {"queued"},  # what the queue-fed backends share
    {"base"},  # the public API: delegates to the modules below
    {"bulk"},  # completes many tasks, one at a time
    {"human"},  # completes tasks, reads instances
    {"nofm", "comments"},  # N-of-M human steps; comments
    {"instances", "migration"},  # migration: instances moved to another version
    {"signals"},  # external signals: sending, and their waits' timeouts
    {"runs", "sweep"},
    {"subflow_join"},  # sub-workflows joined and canceled in the parent's transitions
    {"deadlines", "boundary"},  # deadlines of tasks; hooks, error and timeout edges
    {"chained"},
    {"transition"},
    {"signalwait"},  # what a transition does for WaitForSignal steps
    {"subflows"},  # sub-workflows started with the parent's transition
    {"taskrows", "sweeping", "retention"},  # a task's own rows; the sweep's loop; purges
    {"users"},  # who a task is for: user pks, assignees
    {"routing", "leases", "protocol", "sql", "left"},
]

#: Modules allowed past MAX_LINES, each one concept (see the docs' engine map).
ONE_CONCEPT = {"conditions.py": "the condition grammar: parser, checks and evaluator"}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports at import time (not in functions, not
    under ``TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    )
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("django_workflows"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("django_workflows"):
                    continue
                found.add(target)
                for alias in node.names:  # "from . import routing" imports a module
                    candidate = f"{target}.{alias.name}"
                    if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
                        found.add(candidate)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(tree.body)
    return found


def all_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts and "contrib" not in path.parts
    }


def test_the_package_has_no_import_cycle():
    modules = all_modules()
    graph = {name: {i for i in imports(path) if i in modules} for name, path in modules.items()}
    state: dict[str, int] = {}

    def walk(name, trail):
        state[name] = 1
        for target in graph[name]:
            if target == name or target.startswith(name + "."):
                continue  # a package importing its own submodules
            if state.get(target) == 1:
                cycle = [*trail[trail.index(target) :], target] if target in trail else [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                walk(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])


def test_the_settings_import_no_engine_code():
    """Not even in a function (conf used to import the engine to reset it: a cycle)."""
    tree = ast.parse((PACKAGE / "conf.py").read_text())
    named = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and "engine" in ast.unparse(node)
    ]
    assert named == []


def test_the_engine_imports_downward_only():
    rank = {name: level for level, names in enumerate(ENGINE_LAYERS) for name in names}
    engine = PACKAGE / "engine"
    for path in [*engine.glob("*.py"), *(engine / "sql").glob("*.py")]:
        own = "sql" if path.parent.name == "sql" else path.stem
        for target in imports(path):
            if not target.startswith("django_workflows.engine."):
                continue
            other = target.split(".")[2]
            if other == own:
                continue
            assert rank[other] > rank[own], f"engine.{own} imports engine.{other}, a layer up"


def test_no_module_is_longer_than_a_reader_takes_in():
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts or path.name in ONE_CONCEPT:
            continue
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"
