"""Execution engines. ``get_engine()`` returns the one ``DJANGO_WORKFLOWS["ENGINE"]`` names."""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed

from ..conf import workflow_settings
from .base import BaseExecutionEngine
from .bulk import TaskCompletion
from .local import LocalExecutionEngine
from .migration import InstanceVerdict, MigrationPlan, MigrationResult
from .runs import Outcome
from .transition import ClaimedRun

_default: BaseExecutionEngine | None = None
_lock = threading.Lock()


def get_engine() -> BaseExecutionEngine:
    """The project's engine: the configured class on the default registry, built once."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = workflow_settings.ENGINE()
    return _default


def reset_default_engine() -> None:
    global _default
    _default = None


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    # override_settings(DJANGO_WORKFLOWS=...) in tests: the next get_engine() rebuilds it.
    if setting == "DJANGO_WORKFLOWS":
        reset_default_engine()


setting_changed.connect(_settings_changed)


__all__ = [
    "BaseExecutionEngine",
    "ClaimedRun",
    "InstanceVerdict",
    "LocalExecutionEngine",
    "MigrationPlan",
    "MigrationResult",
    "Outcome",
    "TaskCompletion",
    "get_engine",
    "reset_default_engine",
]
