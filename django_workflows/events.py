"""Workflow events: stored as ``WorkflowEvent`` rows, delivered after commit."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from asgiref.sync import async_to_sync

logger = logging.getLogger("django_workflows.events")


@dataclass(frozen=True)
class WorkflowEventBase:
    instance_id: str
    workflow_name: str
    workflow_version: str
    timestamp: datetime
    #: Fields stored in the row's columns rather than its payload.
    _columns: ClassVar[tuple[str, ...]] = (
        "instance_id",
        "workflow_name",
        "workflow_version",
        "timestamp",
        "step_name",
    )

    @property
    def type(self) -> str:
        return type(self).__name__

    def payload(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in self._columns
        }


@dataclass(frozen=True)
class WorkflowStarted(WorkflowEventBase):
    user_id: Any = None
    business_key: str = ""


@dataclass(frozen=True)
class WorkflowCompleted(WorkflowEventBase):
    pass


@dataclass(frozen=True)
class WorkflowFailed(WorkflowEventBase):
    step_name: str = ""
    error: str = ""


@dataclass(frozen=True)
class WorkflowCanceled(WorkflowEventBase):
    reason: str = ""


@dataclass(frozen=True)
class WorkflowRetried(WorkflowEventBase):
    step_name: str = ""


@dataclass(frozen=True)
class StepExecuted(WorkflowEventBase):
    """A step finished: ``status`` is completed, failed, or retrying (another attempt follows)."""

    step_name: str = ""
    step_type: str = ""
    status: str = ""
    attempt: int = 1
    error: str = ""
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HumanTaskCreated(WorkflowEventBase):
    step_name: str = ""
    task_id: int = 0
    title: str = ""


@dataclass(frozen=True)
class HumanTaskCompleted(WorkflowEventBase):
    step_name: str = ""
    task_id: int = 0
    user_id: Any = None
    data: dict[str, Any] = field(default_factory=dict)
    #: The absent user, when ``user_id`` completed the task as their substitute.
    on_behalf_of_user_id: Any = None
    #: Seconds from the task's creation to its completion.
    waited_seconds: float = 0.0


@dataclass(frozen=True)
class HumanTaskReassigned(WorkflowEventBase):
    step_name: str = ""
    task_id: int = 0
    user_id: Any = None  # who reassigned it
    from_user_id: Any = None
    from_groups: list[str] = field(default_factory=list)
    to_user_id: Any = None
    to_groups: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass(frozen=True)
class HumanTaskReminder(WorkflowEventBase):
    """The sweep's reminder of an open task, every ``remind_every`` of its step."""

    step_name: str = ""
    task_id: int = 0
    due_at: str | None = None  # the task's due time (ISO 8601), if it has one
    reminder: int = 1  # 1 for the first reminder, 2 for the second...


@dataclass(frozen=True)
class HumanTaskEscalated(WorkflowEventBase):
    """The task was still open ``escalate_after`` after it opened: it moved to the step's
    ``escalate_to`` groups (its assignee and claim cleared). Once per task."""

    step_name: str = ""
    task_id: int = 0
    due_at: str | None = None
    from_user_id: Any = None
    from_groups: list[str] = field(default_factory=list)
    to_groups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HumanTaskCanceled(WorkflowEventBase):
    """An open task of a step with ``assignees`` closed unanswered: the step was decided
    by the others ("completion reached", "vetoed") or failed ("step failed")."""

    step_name: str = ""
    task_id: int = 0
    reason: str = ""


@dataclass(frozen=True)
class StepTimedOut(WorkflowEventBase):
    """A waiting step's timeout edge fired ``after_seconds`` after the step started
    waiting: its waiting work was canceled and the instance went on to ``target``."""

    step_name: str = ""
    step_type: str = ""
    after_seconds: float = 0.0
    target: str = ""


@dataclass(frozen=True)
class CommentAdded(WorkflowEventBase):
    step_name: str = ""  # the task's step; "" for a comment on the instance
    comment_id: int = 0
    task_id: int | None = None
    user_id: Any = None
    excerpt: str = ""  # the text's first 200 characters, for the history


@dataclass(frozen=True)
class SignalReceived(WorkflowEventBase):
    """An external signal arrived (``engine.send_signal``): ``consumed`` by the waiting
    step ``step_name`` at once, or buffered (kept for a later wait; ``step_name`` "").
    A buffered signal consumed later records a second event, ``consumed`` True."""

    step_name: str = ""
    signal: str = ""  # the signal's name
    signal_id: int = 0
    consumed: bool = False
    idempotency_key: str | None = None


@dataclass(frozen=True)
class SignalDiscarded(WorkflowEventBase):
    """The signal will never be consumed: the instance finished with it pending, or a user
    discarded it (``engine.discard_signal``; ``user_id`` and ``reason`` say who and why).
    It is kept, marked discarded."""

    signal: str = ""
    signal_id: int = 0
    user_id: Any = None
    reason: str = ""


@dataclass(frozen=True)
class SubWorkflowStarted(WorkflowEventBase):
    """A SubWorkflowStep started a child instance (in the parent's history)."""

    step_name: str = ""
    child_id: str = ""
    child_workflow: str = ""
    item_index: int = 0


@dataclass(frozen=True)
class SubWorkflowFinished(WorkflowEventBase):
    """A child instance finished (``status``: completed, failed or canceled); in the
    parent's history."""

    step_name: str = ""
    child_id: str = ""
    status: str = ""


@dataclass(frozen=True)
class InstanceMigrated(WorkflowEventBase):
    """The instance moved to another version of its workflow (``workflow_version`` is
    the new one); ``moved`` maps its active steps' old names to their new ones."""

    from_version: str = ""
    to_version: str = ""
    step_map: dict[str, str] = field(default_factory=dict)
    moved: dict[str, str] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[WorkflowEventBase]] = {
    cls.__name__: cls
    for cls in (
        WorkflowStarted,
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowCanceled,
        WorkflowRetried,
        StepExecuted,
        HumanTaskCreated,
        HumanTaskCompleted,
        HumanTaskReassigned,
        HumanTaskReminder,
        HumanTaskEscalated,
        HumanTaskCanceled,
        StepTimedOut,
        CommentAdded,
        SignalReceived,
        SignalDiscarded,
        SubWorkflowStarted,
        SubWorkflowFinished,
        InstanceMigrated,
    )
}


class EventBus:
    """Receives every event after its transition committed. ``emit`` may be sync or async."""

    def emit(self, event: WorkflowEventBase) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class InMemoryEventBus(EventBus):
    """Keeps the events in a list: handy in tests and the shell."""

    def __init__(self) -> None:
        self.events: list[WorkflowEventBase] = []

    def emit(self, event: WorkflowEventBase) -> None:
        self.events.append(event)


def deliver(events: list[WorkflowEventBase], bus: EventBus | None) -> None:
    """Hand events to the bus and the ``workflow_event`` signal; a raising listener is logged."""
    from .signals import workflow_event

    for event in events:
        if bus is not None:
            try:
                if inspect.iscoroutinefunction(bus.emit):
                    async_to_sync(bus.emit)(event)
                else:
                    bus.emit(event)
            except Exception:
                logger.exception("event bus %r failed on %s", bus, event.type)
        for receiver, result in workflow_event.send_robust(sender=type(event), event=event):
            if isinstance(result, Exception):
                logger.error(
                    "workflow_event receiver %r failed on %s",
                    receiver,
                    event.type,
                    exc_info=result,
                )
