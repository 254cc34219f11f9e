"""Celery backend (extra ``celery``): machine steps run as Celery tasks.

``CeleryExecutionEngine`` is imported lazily, so a Celery app module can import
``django_workflows.contrib.celery.tasks.register_tasks`` before Django is set up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["CeleryExecutionEngine", "register_tasks"]


def __getattr__(name: str) -> Any:
    if name == "CeleryExecutionEngine":
        from .engine import CeleryExecutionEngine

        return CeleryExecutionEngine
    if name == "register_tasks":
        from .tasks import register_tasks

        return register_tasks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .engine import CeleryExecutionEngine
    from .tasks import register_tasks
