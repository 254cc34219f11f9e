"""Human tasks: complete (validated by the button pressed), claim, unclaim.

Completing is one transition of the locked instance: the task rule
(``permissions.can_complete_task``) when asked, the step's validation, what a step
without a form may write (``guard_formless``), then routing on.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connections, transaction

from .. import events as ev
from ..context import check_size
from ..exceptions import InvalidAssignee, StateConflict, StepNotFound, TaskNotFound, TaskNotOpen
from ..forms import form_for_step
from ..models import (
    ACTIVE_INSTANCE_STATUSES,
    HumanTask,
    TaskStatus,
    WorkflowInstance,
)
from ..permissions import COMPLETE_ANY_TASK, can_complete_task, can_reassign_task, completion
from ..steps import BaseHumanStep
from . import comments, left, nofm, runs, taskrows, transition
from .protocol import Engine
from .sql import taskdone
from .transition import Transition
from .users import acting_user, assignee_pk, checked_pk


def task_by_id(task_id: Any) -> HumanTask:
    try:
        return HumanTask.objects.get(pk=task_id)
    except (HumanTask.DoesNotExist, ValidationError, ValueError, TypeError):
        raise TaskNotFound(f"no human task with id {task_id!r}") from None


def complete(
    engine: Engine,
    instance_id: Any,
    user: Any,
    data: Any,
    action: str | None,
    check_permission: bool,
    *,
    step_name: str | None = None,
    task_id: Any = None,
    comment: str = "",
) -> WorkflowInstance:
    user_pk = checked_pk(user)
    comment = comments.clean_text(comment, required=False)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError({"data": ["must be a JSON object"]})

    def body(tx: Transition) -> None:
        tasks = HumanTask.objects.filter(instance=tx.instance)
        if task_id is not None:
            tasks = tasks.filter(pk=task_id)
        else:
            if step_name not in tx.graph.steps:
                raise StepNotFound(f"workflow {tx.graph} has no step {step_name!r}")
            tasks = tasks.filter(step_name=step_name)
        open_tasks = tasks.filter(status=TaskStatus.OPEN)
        if task_id is None and step_name is not None and nofm.applies(tx.graph.steps[step_name]):
            task = nofm.pick(open_tasks, user)  # one task per assignee: the user's
        elif task_id is not None and taskdone.reads(connection := connections[tasks.db]):
            task = taskdone.open_task(connection, task_id, tx.instance)  # SQL built once
        elif task_id is not None:
            task = next(iter(open_tasks.order_by()[:1]), None)  # at most one row
        else:
            task = open_tasks.first()
        if task is None:
            what = f"task {task_id}" if task_id is not None else f"step {step_name!r}"
            closed = tasks.values_list("status", "close_reason").first() if task_id else None
            why = f" (it is {', '.join(filter(None, closed))})" if closed else ""
            raise TaskNotOpen(f"{what} of instance {tx.instance.pk} has no open human task{why}")
        if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
            raise StateConflict(
                f"instance {tx.instance.pk} is {tx.instance.status}; retry it first"
            )
        actor = acting_user(user) if check_permission or user_pk is not None else None
        # for_pk: done by a substitute for an absent user, kept on the task and in history.
        allowed, for_pk = completion(task, actor) if actor is not None else (False, None)
        if check_permission and not allowed:
            raise PermissionDenied(f"you may not complete task {task.pk} ({task.title})")
        step = tx.graph.steps[task.step_name]
        if not isinstance(step, BaseHumanStep):
            raise StateConflict(f"step {task.step_name!r} is no longer a human step")
        if action is not None and action not in step.actions:
            known = ", ".join(step.actions) or "none"
            raise ValidationError({"action": [f"unknown action {action!r} (known: {known})"]})
        comments.check_required(step, action, comment)
        form_class = form_for_step(step, action)
        if form_class is not None:  # a typo first: it explains a missing field
            refuse_unknown_fields(form_class, data, step, action)
        cleaned = step.clean(dict(data), action)
        if form_class is None:
            guard_formless(tx.instance, task, step, cleaned, action)
        if action is not None:  # the button's values are the step's own, not the user's
            cleaned.update(step.actions[action])
        ctx = tx.context(task.step_name, user_id=user_pk)
        step.complete(ctx, cleaned)
        changes = ctx.changes
        check_size({**tx.instance.context, **changes})  # refused: nothing changes
        if nofm.applies(step):  # one of several tasks: see engine/nofm.py
            nofm.complete(tx, task, step, changes, action, user_pk, for_pk)
            if comment:
                tx.events.append(comments.write(tx.instance, comment, user_pk, task=task)[1])
            return
        taskrows.record_completed(tx, task, changes, user_pk, for_pk, with_run=True)
        if comment:  # in the completion's transaction: refused, it leaves no comment
            tx.events.append(comments.write(tx.instance, comment, user_pk, task=task)[1])
        tx.leave(task.step_name)
        tx.advance(
            task.step_name,
            run_pk=task.step_run_id,
            step_type="human",
            changes=changes,
            emit_done=False,
            refuse_bad_input=True,
        )

    instance, runnable, claimed = transition.run(
        engine,
        instance_id,
        body,
        claim_next=engine.executes_inline(),
        # By the task's id alone: the lock finds its instance (one statement, not two).
        by_task=task_id if instance_id is None else None,
    )
    runs.go_on(engine, runnable, claimed)
    return left.as_left(instance.pk)


def claim_task(task_id: Any, user: Any) -> HumanTask:
    """Take a task so that others in its candidate groups leave it alone."""
    user = acting_user(user)
    with transaction.atomic():
        task = locked_task(task_id)
        if not can_complete_task(task, user, ignore_claim=True):
            raise PermissionDenied(f"you may not claim task {task.pk} ({task.title})")
        if task.claimed_by_id not in (None, user.pk):
            raise StateConflict(f"task {task.pk} is claimed by {task.claimed_by}")
        task.claimed_by = user
        task.save(update_fields=["claimed_by"])
    return task


def unclaim_task(task_id: Any, user: Any) -> HumanTask:
    """Give a claimed task back to its candidate groups: the claimer, or a user who may
    complete any task (``complete_any_task``; superusers)."""
    user = acting_user(user)
    with transaction.atomic():
        task = locked_task(task_id)
        if task.claimed_by_id is None:
            raise StateConflict(f"task {task.pk} is not claimed")
        if task.claimed_by_id != user.pk and not user.has_perm(COMPLETE_ANY_TASK):
            raise PermissionDenied(f"task {task.pk} is claimed by someone else")
        task.claimed_by = None
        task.save(update_fields=["claimed_by"])
    return task


def reassign_task(engine: Engine, task_id: Any, to: Any, *, by: Any, reason: str = "") -> HumanTask:
    """Hand an open task to another user (``to``: a user or a pk) or to groups (``to``: a
    list of group names); its claim is released. ``by`` must be allowed
    (``permissions.can_reassign_task``). One transition of the instance, with a
    ``HumanTaskReassigned`` event."""
    actor = acting_user(by)
    if isinstance(to, list | tuple):
        groups = [str(name) for name in to]
        if not groups or any(not name or len(name) > 150 for name in groups):
            raise ValidationError({"to": ["group names: 1 to 150 characters each, at least one"]})
    else:
        groups = []
        if to is None:
            raise ValidationError({"to": ["a user, or a list of group names"]})
    if len(reason) > 1000:
        raise ValidationError({"reason": ["at most 1000 characters"]})
    task = task_by_id(task_id)

    def body(tx: Transition) -> None:
        nonlocal task
        task = locked_task(task.pk)
        if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
            raise StateConflict(f"instance {tx.instance.pk} is {tx.instance.status}")
        if not can_reassign_task(task, actor):
            raise PermissionDenied(f"you may not reassign task {task.pk} ({task.title})")
        before_user = task.assignee_id
        before_groups = [group.name for group in task.candidate_groups.all()]
        try:
            task.assignee_id = assignee_pk(task.step_name, to) if not groups else None
        except InvalidAssignee:
            raise ValidationError({"to": [f"no user with id {to!r}"]}) from None
        task.claimed_by = None
        task.save(update_fields=["assignee", "claimed_by"])
        if groups:
            taskrows.replace_groups(task, groups)
        tx.event(
            ev.HumanTaskReassigned,
            step_name=task.step_name,
            task_id=task.pk,
            user_id=actor.pk,
            from_user_id=before_user,
            from_groups=before_groups,
            to_user_id=task.assignee_id,
            to_groups=groups,
            reason=reason,
        )

    transition.run(engine, task.instance_id, body, needs_definition=False)
    return task_by_id(task.pk)


def locked_task(task_id: Any) -> HumanTask:
    try:
        task = HumanTask.objects.select_for_update().get(pk=task_id)
    except (HumanTask.DoesNotExist, ValidationError, ValueError, TypeError):
        raise TaskNotFound(f"no human task with id {task_id!r}") from None
    if task.status != TaskStatus.OPEN:
        raise TaskNotOpen(f"task {task.pk} is {task.status}")
    return task


def guard_formless(
    instance: WorkflowInstance,
    task: HumanTask,
    step: BaseHumanStep,
    cleaned: dict[str, Any],
    action: str | None,
) -> None:
    """What a completer may write through a step without a form: the keys it declares
    (``fields``), else new keys only. A key already in the context is the workflow's
    (``amount``, checked by the steps before): changing it needs a declaration, unless
    this step set it itself at an earlier completion (a rework loop)."""
    keys = set(cleaned) - step.action_keys(action)
    if step.fields is not None:
        refused = sorted(keys - set(step.fields))
        reason = f"not one of the fields step {task.step_name!r} takes ({', '.join(step.fields)})"
    else:
        refused = sorted(key for key in keys if key in instance.context)
        if refused:
            earlier = HumanTask.objects.filter(
                instance=instance, step_name=task.step_name, status=TaskStatus.COMPLETED
            ).values_list("result", flat=True)
            own = {key for result in earlier for key in (result or {})}
            refused = [key for key in refused if key not in own]
        reason = (
            f"already in the workflow's context, and step {task.step_name!r} has no form: it "
            "may only add new keys (declare `fields` on the step to let it change this one)"
        )
    if refused:
        raise ValidationError({key: [reason] for key in refused})


def refuse_unknown_fields(
    form_class: Any, data: dict[str, Any], step: BaseHumanStep, action: str | None
) -> None:
    """A key the form does not take is a mistake (``coments``), not something to drop
    in silence: refused, naming the form's fields. The action's own keys may be sent."""
    fields = list(form_class.base_fields)
    unknown = sorted(set(data) - set(fields) - step.action_keys(action))
    if unknown:
        known = ", ".join(fields) or "none"
        raise ValidationError(
            {key: [f"not a field of this task's form (its fields: {known})"] for key in unknown}
        )
