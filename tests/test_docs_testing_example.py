"""The tests of docs/howto/testing.md, collected and run as a project would run them.

The example imports the quickstart's workflow from ``expenses.workflows``; that module
is the quickstart's ``expenses/workflows.py`` block, registered on a registry of its own
(nothing leaks into the project registry).
"""

import sys
import types

from .snippets import DOCS, isolated_engine, python_blocks, run_block, run_quickstart_workflows

_expenses = types.ModuleType("expenses")
_expenses.workflows = types.ModuleType("expenses.workflows")
with isolated_engine():
    run_quickstart_workflows(_expenses.workflows.__dict__)
_saved = {name: sys.modules.get(name) for name in ("expenses", "expenses.workflows")}
sys.modules.update({"expenses": _expenses, "expenses.workflows": _expenses.workflows})
try:
    (_example,) = [
        block
        for block in python_blocks(DOCS / "howto" / "testing.md")
        if block.code.startswith("# expenses/tests/test_workflows.py")
    ]
    # The example's fixture ``engine`` and its tests, as module globals: pytest collects
    # them here.
    globals().update(
        {
            name: value
            for name, value in run_block(_example, {"__name__": __name__}).items()
            if name == "engine" or name.startswith("test_")
        }
    )
finally:
    for _name, _module in _saved.items():
        if _module is None:
            sys.modules.pop(_name, None)
        else:
            sys.modules[_name] = _module
