"""N-of-M human steps: a step with ``assignees`` opens one task per assignee
(``Transition._plan_task``); this module completes one of them.

Each completion is a transition of the locked instance, so two at the same moment are
serialized: the second sees the first's task completed and its result in the context.
A completion appends its result to the list under the step's name. When the step's
``completion`` is reached (all, any, N completed) or its ``veto`` matches this result,
the other open tasks are canceled with that reason and the step completes and routes
on, once; the deciding completion's data is merged into the context as a one-task
step's is. Otherwise the instance goes on waiting.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When

from .. import events as ev
from ..context import check_size
from ..exceptions import ConditionEvaluationError, WorkflowNotFound
from ..models import DefinitionVersion, HumanTask, StepRun, StepRunStatus, TaskStatus
from ..permissions import completable_tasks
from ..steps import BaseHumanStep
from .protocol import Engine
from .taskrows import record_completed
from .transition import Transition, error_text
from .users import acting_user

COMPLETION_REACHED = "completion reached"
VETOED = "vetoed"
STEP_FAILED = "step failed"


def applies(step: Any) -> bool:
    """Whether ``step`` opens one task per assignee."""
    return isinstance(step, BaseHumanStep) and step.assignees is not None


def pick(open_tasks: QuerySet[HumanTask], user: Any) -> HumanTask | None:
    """Of a step's open tasks, the one ``user`` completes when the caller names the step,
    not the task: one assigned to them first, then one of their groups'; else the first
    (which the task rule then refuses, with its message)."""
    if user is None:
        return open_tasks.first()
    actor = acting_user(user)
    theirs = completable_tasks(actor, open_tasks).annotate(
        dwf_own=Case(
            When(assignee_id=actor.pk, then=Value(0)), default=Value(1), output_field=IntegerField()
        )
    )
    return theirs.order_by("dwf_own", "slot").first() or open_tasks.order_by("slot").first()


def complete(
    tx: Transition,
    task: HumanTask,
    step: BaseHumanStep,
    changes: dict[str, Any],
    action: str | None,
    user_pk: Any,
    for_pk: Any = None,
) -> None:
    """Record ``task`` completed with ``changes`` (its cleaned data, as ``step.complete``
    made them) by ``user_pk`` (for ``for_pk``, when a substitute answers for an absent
    user); decide the step if this completion is the one that does."""
    name, run_id = task.step_name, task.step_run_id
    if name in changes:
        raise ValidationError(
            {name: [f"the step collects its results under {name!r}: not a field to send"]}
        )
    counts = _counts(run_id)
    done_before = counts.get(TaskStatus.COMPLETED, 0)
    # Each person answers once: a substitute may answer for the absent user and for
    # themselves, not twice for either.
    answerer = for_pk if for_pk is not None else user_pk
    if (
        answerer is not None
        and done_before
        and HumanTask.objects.filter(step_run_id=run_id, status=TaskStatus.COMPLETED)
        .filter(
            Q(completed_on_behalf_of_id=answerer)
            | Q(completed_by_id=answerer, completed_on_behalf_of__isnull=True)
        )
        .exists()
    ):
        whom = "you" if for_pk is None else f"user {for_pk}"
        raise PermissionDenied(
            f"{whom} already answered a task of step {name!r}: each assignee answers once"
        )
    now = record_completed(tx, task, changes, user_pk, for_pk)
    earlier = tx.instance.context.get(name) if done_before else None
    results = [*earlier] if isinstance(earlier, list) else []
    result = {"user": _jsonable(user_pk), "action": action, "data": changes, "at": now.isoformat()}
    if for_pk is not None:
        result["on_behalf_of"] = _jsonable(for_pk)
    results.append(result)
    try:
        vetoed = step.veto_condition is not None and step.veto_condition(
            {**changes, "action": action}
        )
    except ConditionEvaluationError as exc:
        fail(tx, task, exc)
        return
    done = done_before + 1
    still_open = counts.get(TaskStatus.OPEN, 0) - 1
    if not vetoed and still_open > 0 and done < _needed(step, done, still_open):
        tx.instance.context[name] = results  # the instance waits for the others
        check_size(tx.instance.context)
        return
    cancel_open(tx, task, VETOED if vetoed else COMPLETION_REACHED)
    step_changes = {**changes, name: results}
    StepRun.objects.filter(pk=run_id).update(
        status=StepRunStatus.COMPLETED, changes=step_changes, finished_at=now
    )
    tx.leave(name)
    tx.advance(
        name,
        run_pk=run_id,
        step_type="human",
        changes=step_changes,
        emit_done=False,
        refuse_bad_input=True,
    )


def progress(engine: Engine, task: HumanTask) -> dict[str, Any] | None:
    """Where the step of ``task`` stands, for a step with ``assignees`` (None for others,
    and for a definition no longer registered): its rule, how many completions it needs
    and has, and its tasks open and canceled."""
    row = DefinitionVersion.objects.only("name", "version").get(instances=task.instance_id)
    try:
        step = engine.registry.get_definition(row.name, row.version).steps.get(task.step_name)
    except WorkflowNotFound:
        return None
    if not isinstance(step, BaseHumanStep) or not applies(step):
        return None
    counts = _counts(task.step_run_id)
    done, still_open = counts.get(TaskStatus.COMPLETED, 0), counts.get(TaskStatus.OPEN, 0)
    return {
        "rule": step.completion,
        "needed": _needed(step, done, still_open),
        "completed": done,
        "open": still_open,
        "canceled": counts.get(TaskStatus.CANCELED, 0),
    }


def _counts(run_id: int) -> dict[str, int]:
    """The tasks of a step run by status (one query)."""
    rows = HumanTask.objects.filter(step_run_id=run_id).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def _needed(step: BaseHumanStep, done: int, still_open: int) -> int:
    if step.completion == "all":
        return done + still_open
    return 1 if step.completion == "any" else int(step.completion)


def cancel_open(tx: Transition, task: HumanTask, reason: str) -> None:
    """Cancel the other open tasks of ``task``'s step run, each with an event."""
    others = HumanTask.objects.filter(step_run_id=task.step_run_id, status=TaskStatus.OPEN)
    ids = list(others.order_by("slot").values_list("pk", flat=True))
    others.filter(pk__in=ids).update(status=TaskStatus.CANCELED, close_reason=reason)
    for pk in ids:
        tx.event(ev.HumanTaskCanceled, step_name=task.step_name, task_id=pk, reason=reason)


def fail(tx: Transition, task: HumanTask, exc: Exception) -> None:
    """The veto raised: the step and the instance fail like a step whose edge condition
    raises (context as before the step; ``retry`` opens its tasks again)."""
    message, trace = error_text(exc)
    cancel_open(tx, task, STEP_FAILED)
    StepRun.objects.filter(pk=task.step_run_id).update(
        status=StepRunStatus.FAILED, error=message, traceback=trace
    )
    tx.event(
        ev.StepExecuted,
        step_name=task.step_name,
        step_type="human",
        status="failed",
        error=message,
    )
    tx.leave(task.step_name)
    tx.fail_instance(task.step_name, message, trace)


def _jsonable(pk: Any) -> Any:
    return str(pk) if isinstance(pk, uuid.UUID) else pk
