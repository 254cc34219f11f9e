"""Comments on an instance or on one of its tasks: who may write one, what a completion
must carry (``comment_required``), and the ``CommentAdded`` event beside each row.

A comment changes no state of the instance: it is written in a transaction of its own
(``add``), or inside the completion that carries it (``check_required`` before the
completion's writes, ``write`` among them), so a refused completion leaves no comment.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files import File
from django.db import router, transaction
from django.utils import timezone

from .. import events as ev
from ..conf import workflow_settings
from ..exceptions import InstanceNotFound, TaskNotFound
from ..models import Comment, HumanTask, WorkflowEvent, WorkflowInstance
from ..permissions import can_view_instance, can_view_task
from ..steps import BaseHumanStep
from .protocol import Engine
from .users import acting_user

#: The longest comment, in characters.
MAX_LENGTH = 10_000
#: How much of a comment its ``CommentAdded`` event carries into the history.
EXCERPT_LENGTH = 200


def clean_text(text: Any, *, required: bool = True, field: str = "comment") -> str:
    """The comment's text, stripped; 1 to ``MAX_LENGTH`` characters (or "" if not
    ``required``), else ``ValidationError`` on ``field``."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValidationError({field: ["must be a string"]})
    text = text.strip()
    if required and not text:
        raise ValidationError({field: ["must not be empty"]})
    if len(text) > MAX_LENGTH:
        raise ValidationError({field: [f"at most {MAX_LENGTH} characters"]})
    if "\x00" in text:  # PostgreSQL stores no NUL character
        raise ValidationError({field: ["may not contain NUL characters"]})
    return text


def check_attachment(attachment: File | None) -> None:
    limit = workflow_settings.MAX_COMMENT_ATTACHMENT_BYTES
    if attachment is not None and limit is not None and (attachment.size or 0) > limit:
        raise ValidationError({"attachment": [f"at most {limit} bytes"]})


def requires_comment(step: BaseHumanStep, action: str | None) -> bool:
    """Whether completing ``step`` with ``action`` needs a comment (``comment_required``)."""
    required = getattr(step, "comment_required", ())
    if required is True:
        return True
    return bool(required) and action is not None and action in required


def check_required(step: BaseHumanStep, action: str | None, text: str) -> None:
    if not text and requires_comment(step, action):
        what = action if action is not None else "complete this task"
        raise ValidationError({"comment": [f"a comment is required to {what}"]})


def write(
    instance: WorkflowInstance,
    text: str,
    user_pk: Any,
    *,
    task: HumanTask | None = None,
    attachment: File | None = None,
) -> tuple[Comment, ev.WorkflowEventBase]:
    """Insert the comment and its event row (in the caller's transaction); the event to
    deliver after commit is returned."""
    comment = Comment(instance=instance, task=task, author_id=user_pk, text=text)
    if attachment is not None:
        name = os.path.basename(getattr(attachment, "name", None) or "") or "attachment"
        comment.attachment.save(name, attachment, save=False)
    comment.save()
    event = ev.CommentAdded(
        instance_id=str(instance.pk),
        workflow_name=instance.definition.name,
        workflow_version=instance.definition.version,
        timestamp=timezone.now(),
        step_name=task.step_name if task is not None else "",
        comment_id=comment.pk,
        task_id=task.pk if task is not None else None,
        user_id=user_pk,
        excerpt=text[:EXCERPT_LENGTH],
    )
    return comment, event


def add(
    engine: Engine,
    instance_id: Any,
    user: Any,
    text: Any,
    *,
    task_id: Any = None,
    attachment: File | None = None,
) -> Comment:
    """Comment on an instance (or on its task ``task_id``) as ``user``, who must be
    allowed to see it (``can_view_instance``; ``can_view_task`` for a task)."""
    actor = acting_user(user)
    text = clean_text(text, field="text")
    check_attachment(attachment)
    try:
        instance = WorkflowInstance.objects.select_related("definition").get(pk=instance_id)
    except (WorkflowInstance.DoesNotExist, ValidationError, ValueError, TypeError):
        raise InstanceNotFound(f"no workflow instance with id {instance_id!r}") from None
    task = None
    if task_id is not None:
        try:
            task = HumanTask.objects.get(pk=task_id, instance=instance)
        except (HumanTask.DoesNotExist, ValidationError, ValueError, TypeError):
            raise TaskNotFound(f"instance {instance.pk} has no task {task_id!r}") from None
        allowed = can_view_task(actor, task)
    else:
        allowed = can_view_instance(actor, instance)
    if not allowed:
        raise PermissionDenied("you may not comment on what you may not see")
    with transaction.atomic(using=router.db_for_write(Comment)):
        comment, event = write(instance, text, actor.pk, task=task, attachment=attachment)
        WorkflowEvent.objects.create(
            instance=instance,
            type=event.type,
            step_name=event.step_name,  # type: ignore[attr-defined]
            payload=event.payload(),
            created_at=event.timestamp,
        )
        transaction.on_commit(partial(ev.deliver, [event], engine.event_bus))
    return comment
