"""Bulk approval: the same completion for many tasks, each in its own transition.

Every task goes through the one single-task completion (``human.complete``, with
the task rule checked), so a bulk completion refuses exactly what one by one would. A
refusal is the result of its task, never an exception: the tasks completed before and
after it stay completed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError

from ..exceptions import NotFound, StateConflict, WorkflowError
from ..permissions import can_view_task
from . import human
from .human import task_by_id
from .protocol import Engine
from .users import acting_user

#: The most task ids one call takes: a larger batch is refused as a whole, not cut.
MAX_TASKS = 500


@dataclass(frozen=True)
class TaskCompletion:
    """What happened to one task of a bulk completion."""

    task_id: Any
    #: Whether this call completed the task.
    completed: bool
    #: Why not (empty when completed).
    reason: str = ""
    #: ``completed``, ``not_found`` (or not visible to the user), ``permission_denied``,
    #: ``invalid`` (the data, the action or a missing comment) or ``conflict`` (the
    #: task is no longer open, the instance is not active).
    code: str = "completed"
    #: The task's instance, when completed.
    instance_id: Any = None


def complete_tasks(
    engine: Engine,
    task_ids: Iterable[Any],
    user: Any,
    *,
    action: str | None = None,
    data: dict[str, Any] | None = None,
    comment: str = "",
) -> list[TaskCompletion]:
    """Complete each task of ``task_ids`` as ``user`` (the task rule is checked), one
    transition each; one result per distinct id, in the order given."""
    actor = acting_user(user)
    if isinstance(task_ids, str | bytes) or not isinstance(task_ids, Iterable):
        raise ValidationError({"task_ids": ["a list of task ids"]})
    ids: dict[str, Any] = {}
    for task_id in task_ids:
        ids.setdefault(str(task_id), task_id)
        if len(ids) > MAX_TASKS:
            raise ValidationError({"task_ids": [f"at most {MAX_TASKS} tasks at once"]})
    if not ids:
        raise ValidationError({"task_ids": ["at least one task id"]})
    if data is not None and not isinstance(data, dict):
        raise ValidationError({"data": ["must be a JSON object"]})
    return [
        _complete_one(engine, task_id, actor, action, data, comment) for task_id in ids.values()
    ]


def _complete_one(
    engine: Engine,
    task_id: Any,
    actor: Any,
    action: str | None,
    data: dict[str, Any] | None,
    comment: str,
) -> TaskCompletion:
    try:
        # A task the user may not see is "not found": a batch reveals no more than
        # the task list does.
        task = task_by_id(task_id)
        if not can_view_task(actor, task):
            raise NotFound(f"no human task with id {task_id!r}")
        payload = dict(data) if data is not None else None
        instance = human.complete(
            engine, task.instance_id, actor, payload, action, True, task_id=task.pk, comment=comment
        )
    except PermissionDenied as exc:
        return TaskCompletion(task_id, False, str(exc), "permission_denied")
    except ValidationError as exc:
        return TaskCompletion(task_id, False, validation_text(exc), "invalid")
    except NotFound as exc:
        return TaskCompletion(task_id, False, str(exc), "not_found")
    except StateConflict as exc:
        return TaskCompletion(task_id, False, str(exc), "conflict")
    except WorkflowError as exc:  # an assignee or a context the completion made invalid
        return TaskCompletion(task_id, False, str(exc), "invalid")
    return TaskCompletion(task_id, True, instance_id=instance.pk)


def validation_text(exc: ValidationError) -> str:
    """``field: message; ...`` of a ValidationError, for one line of a report."""
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)
