"""The tests of docs/howto/testing.md, collected and run as a project would run them.

The example imports the quickstart's workflow from ``expenses.workflows``; that module
is the quickstart's snippet, registered on a registry of its own (nothing leaks into the
project registry).
"""

import sys
import types

from .snippets import isolated_engine, run_snippet

with isolated_engine():
    _expenses = types.ModuleType("expenses")
    _expenses.workflows = types.ModuleType("expenses.workflows")
    _expenses.workflows.__dict__.update(run_snippet("quickstart_workflows.py"))
_saved = {name: sys.modules.get(name) for name in ("expenses", "expenses.workflows")}
sys.modules.update({"expenses": _expenses, "expenses.workflows": _expenses.workflows})
try:
    # The example's fixture ``engine`` and its two tests, as module globals: pytest
    # collects them here.
    globals().update(
        {
            name: value
            for name, value in run_snippet("howto_testing.py").items()
            if name == "engine" or name.startswith("test_")
        }
    )
finally:
    for _name, _module in _saved.items():
        if _module is None:
            sys.modules.pop(_name, None)
        else:
            sys.modules[_name] = _module
