"""SAQ backend (extra ``saq``): machine steps run as jobs on SAQ workers (Redis).

``SAQExecutionEngine`` sends the jobs; ``worker_settings()`` builds the settings dict
the ``saq`` command runs (the step job and the sweep as a cron job). Both are imported
lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SAQExecutionEngine": "engine",
    "queue_from_settings": "worker",
    "worker_settings": "worker",
    "run_workflow_step": "worker",
    "sweep_workflows": "worker",
}
__all__ = [
    "SAQExecutionEngine",
    "queue_from_settings",
    "run_workflow_step",
    "sweep_workflows",
    "worker_settings",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


if TYPE_CHECKING:  # pragma: no cover
    from .engine import SAQExecutionEngine
    from .worker import queue_from_settings, run_workflow_step, sweep_workflows, worker_settings
