"""Run the documentation's code examples (``docs/snippets/*.py``) as the docs show them.

A snippet registers its workflows on ``django_workflows.registry`` and calls
``get_engine()``, as code in a project does. ``isolated_engine`` swaps both for a fresh
registry and a ``LocalExecutionEngine`` on it, so that nothing leaks into the project
registry the other tests use.
"""

from __future__ import annotations

import contextlib
import re
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django_workflows
import django_workflows.engine as engine_package
from django_workflows import LocalExecutionEngine, WorkflowRegistry

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"


@contextlib.contextmanager
def isolated_engine(event_bus: Any = None) -> Iterator[LocalExecutionEngine]:
    """The project registry and ``get_engine()`` on a fresh registry, meanwhile."""
    registry = WorkflowRegistry()
    engine = LocalExecutionEngine(registry, event_bus=event_bus)
    module = sys.modules["django_workflows.registry"]  # what the system checks read
    saved = django_workflows.registry, module.registry, engine_package._default
    django_workflows.registry = module.registry = registry
    engine_package._default = engine
    try:
        yield engine
    finally:
        django_workflows.registry, module.registry, engine_package._default = saved


def run_snippet(name: str, **names: Any) -> dict[str, Any]:
    """Execute ``docs/snippets/<name>`` with ``names`` defined (``manager``, ...)."""
    return runpy.run_path(str(SNIPPETS / name), init_globals=names)


def python_blocks(page: Path) -> list[str]:
    """The ```python fenced blocks of a Markdown page (indented ones included)."""
    blocks = []
    for match in re.finditer(
        r"^(?P<indent>[ \t]*)```python\n(?P<body>.*?)^(?P=indent)```", page.read_text(), re.M | re.S
    ):
        indent = len(match["indent"])
        blocks.append("".join(line[indent:] for line in match["body"].splitlines(keepends=True)))
    return blocks
