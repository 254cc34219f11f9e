"""django-workflows: business workflows for Django.

Public names are imported lazily so that ``from django_workflows import
WorkflowDefinition`` works in any module, before the app registry is ready.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "WorkflowDefinition": "definition",
    "Edge": "definition",
    "BaseStep": "steps",
    "BaseMachineStep": "steps",
    "BaseHumanStep": "steps",
    "ExclusiveGateway": "steps",
    "ParallelGateway": "steps",
    "TimerStep": "steps",
    "WaitForSignal": "signal_steps",
    "SubWorkflowStep": "steps",
    "StepType": "steps",
    "RetryPolicy": "steps",
    "WorkflowContext": "context",
    "EventBus": "events",
    "InMemoryEventBus": "events",
    "WorkflowStarted": "events",
    "WorkflowCompleted": "events",
    "WorkflowFailed": "events",
    "WorkflowCanceled": "events",
    "WorkflowRetried": "events",
    "StepExecuted": "events",
    "HumanTaskCreated": "events",
    "HumanTaskCompleted": "events",
    "HumanTaskReminder": "events",
    "HumanTaskEscalated": "events",
    "SignalReceived": "events",
    "SignalDiscarded": "events",
    "BaseExecutionEngine": "engine",
    "LocalExecutionEngine": "engine",
    "get_engine": "engine",
    "WorkflowStatus": "models",
    "WorkflowError": "exceptions",
    "DefinitionError": "exceptions",
    "ConditionError": "exceptions",
    "WorkflowNotFound": "exceptions",
    "InstanceNotFound": "exceptions",
    "TaskNotFound": "exceptions",
    "SignalNotFound": "exceptions",
    "StepNotFound": "exceptions",
    "StateConflict": "exceptions",
    "TaskNotOpen": "exceptions",
    "ContextError": "exceptions",
    "NotFound": "exceptions",
    "RoutingError": "exceptions",
    "ConditionEvaluationError": "exceptions",
    "InvalidAssignee": "exceptions",
    "LoopLimitExceeded": "exceptions",
    "UnknownUser": "exceptions",
}

# Imported eagerly (pure Python, no models): the ``registry`` instance must win over the
# ``django_workflows.registry`` submodule of the same name.
from .registry import WorkflowRegistry, registry  # noqa: E402

__all__ = sorted([*_EXPORTS, "WorkflowRegistry", "registry"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'django_workflows' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


if TYPE_CHECKING:  # pragma: no cover
    from .context import WorkflowContext
    from .definition import Edge, WorkflowDefinition
    from .engine import BaseExecutionEngine, LocalExecutionEngine, get_engine
    from .events import (
        EventBus,
        HumanTaskCompleted,
        HumanTaskCreated,
        HumanTaskEscalated,
        HumanTaskReminder,
        InMemoryEventBus,
        SignalDiscarded,
        SignalReceived,
        StepExecuted,
        WorkflowCanceled,
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowRetried,
        WorkflowStarted,
    )
    from .exceptions import (
        ConditionError,
        ConditionEvaluationError,
        ContextError,
        DefinitionError,
        InstanceNotFound,
        InvalidAssignee,
        LoopLimitExceeded,
        NotFound,
        RoutingError,
        SignalNotFound,
        StateConflict,
        StepNotFound,
        TaskNotFound,
        TaskNotOpen,
        UnknownUser,
        WorkflowError,
        WorkflowNotFound,
    )
    from .models import WorkflowStatus
    from .signal_steps import WaitForSignal
    from .steps import (
        BaseHumanStep,
        BaseMachineStep,
        BaseStep,
        ExclusiveGateway,
        ParallelGateway,
        RetryPolicy,
        StepType,
        SubWorkflowStep,
        TimerStep,
    )
