"""Django Tasks backend (extra ``tasks``): machine steps run as tasks of Django's Tasks
framework (``django.tasks`` from Django 6, the ``django-tasks`` backport before), on
whatever Tasks backend the project configures. Imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["DjangoTasksExecutionEngine"]


def __getattr__(name: str) -> Any:
    if name == "DjangoTasksExecutionEngine":
        from .engine import DjangoTasksExecutionEngine

        return DjangoTasksExecutionEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .engine import DjangoTasksExecutionEngine
