"""Email about human tasks, opt-in (``DJANGO_WORKFLOWS["NOTIFY_BY_EMAIL"]``).

A receiver of the ``workflow_event`` signal (connected by the app config): events are
delivered after their transition committed, so a task that was rolled back mails
nobody, and a mail that cannot be sent is logged, never raised (the transition is
done). Other channels (chat, SMS) listen to the same events: see the how-to
"Deadlines and notifications".

Who is mailed: the task's assignee, else the user who claimed it, else the active
members of its candidate groups; only users with an email address. Each gets a mail of
their own, rendered from ``django_workflows/email/<kind>_subject.txt`` and
``<kind>_body.txt`` (override them in your project's templates).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

from . import events as ev
from .conf import workflow_settings
from .models import HumanTask, TaskStatus
from .permissions import active_substitutions, active_users_q

logger = logging.getLogger("django_workflows.notifications")

#: The events that mail someone, and the kind of mail (the templates' prefix).
KINDS: dict[type[ev.WorkflowEventBase], str] = {
    ev.HumanTaskCreated: "task_created",
    ev.HumanTaskReassigned: "task_reassigned",
    ev.HumanTaskReminder: "task_reminder",
    ev.HumanTaskEscalated: "task_escalated",
}


def on_event(sender: Any, event: ev.WorkflowEventBase, **kwargs: Any) -> None:
    """The ``workflow_event`` receiver: mail about the events of ``KINDS``, if enabled."""
    kind = KINDS.get(type(event))
    if kind is None or not workflow_settings.NOTIFY_BY_EMAIL:
        return
    task_id = getattr(event, "task_id", None)
    try:
        notify(kind, task_id, event)
    except Exception:
        logger.exception("could not mail %s about human task %s", kind, task_id)


def notify(kind: str, task_id: Any, event: ev.WorkflowEventBase | None = None) -> int:
    """Mail the people ``task_id`` is for about it (``kind``: task_created,
    task_reassigned, task_reminder, task_escalated). Returns how many mails were sent;
    none if the task is no longer open."""
    task = (
        HumanTask.objects.select_related("instance__definition", "assignee", "claimed_by")
        .filter(pk=task_id, status=TaskStatus.OPEN)
        .first()
    )
    if task is None:
        return 0
    url = task_url(task)
    messages = []
    for user in recipients(task):
        context = {"task": task, "instance": task.instance, "user": user, "event": event}
        context["url"] = url
        subject = render_to_string(f"django_workflows/email/{kind}_subject.txt", context)
        body = render_to_string(f"django_workflows/email/{kind}_body.txt", context)
        address = getattr(user, user.get_email_field_name())
        # A subject is one line: the template's newlines would break the header.
        messages.append(EmailMessage(" ".join(subject.split()), body, to=[address]))
    if not messages:
        return 0
    return get_connection().send_messages(messages) or 0


def recipients(task: HumanTask) -> list[Any]:
    """The users to mail about ``task``: its assignee, else its claimer, else the active
    members of its candidate groups; and the substitutes standing in for any of them now
    (they may complete it); only those with an email address."""
    user_model = get_user_model()
    email = user_model.get_email_field_name()
    users = user_model._default_manager.filter(active_users_q()).exclude(**{email: ""})
    users = users.exclude(**{f"{email}__isnull": True})
    person_pk = task.assignee_id or task.claimed_by_id
    if person_pk is not None:
        people = users.filter(pk=person_pk)
    else:
        names = list(task.candidate_groups.values_list("name", flat=True))
        if not names:
            return []
        people = users.filter(groups__name__in=names)
    found = list(people.distinct().order_by("pk"))
    standing_in = active_substitutions().filter(user__in=[user.pk for user in found])
    known = {user.pk for user in found}
    substitutes = users.filter(pk__in=standing_in.values("substitute")).exclude(pk__in=known)
    return found + list(substitutes.order_by("pk"))


def task_url(task: HumanTask) -> str:
    """The link to the task in a mail: the app's own task page if the project routes it
    (``django_workflows:task``), else the admin's completion page; prefixed by
    ``SITE_URL``."""
    for name in ("django_workflows:task", "admin:django_workflows_humantask_complete"):
        try:
            path = reverse(name, args=[task.pk])
        except NoReverseMatch:
            continue
        return workflow_settings.SITE_URL.rstrip("/") + path
    return ""
