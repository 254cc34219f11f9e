"""The app's own pages, for approvers who are not staff: "My tasks" (the inbox) and
the task page, under ``django_workflows.urls``.

Login required (``settings.LOGIN_URL``), no staff status: who may see, complete, claim
and reassign a task is ``permissions.py``'s rule, as in the admin, whose task pages do
the same through ``taskpage.py``. A task the user may not see is a 404 (its existence
is not told); one they may see but not complete is shown read-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import taskcomments, taskpage
from .models import HumanTask
from .permissions import can_complete_task, can_reassign_task, can_view_task
from .steps import BaseHumanStep
from .taskpage import instance_label, safe_next

#: The URL names the shared task page (``includes/task_body.html``) posts to.
APP_URLS = {
    "task": "django_workflows:task",
    "claim": "django_workflows:claim",
    "unclaim": "django_workflows:unclaim",
    "reassign": "django_workflows:reassign",
    "comment": "django_workflows:comment",
}


def _inbox_url() -> str:
    return reverse("django_workflows:inbox")


def _task_url(task_id: Any) -> str:
    return reverse("django_workflows:task", args=[task_id])


def _refuse(text: str) -> HttpResponse:
    raise PermissionDenied(text)


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    """My tasks: the open tasks the user may complete, due first."""
    page = taskpage.inbox_page(request.user, request.GET.get("p"))
    context = {"title": _("My tasks"), "page": page, "tasks": list(page), "urls": APP_URLS}
    return render(request, "django_workflows/inbox.html", context)


def _visible_task(request: HttpRequest, pk: Any) -> HumanTask:
    """The task, if the user may see, complete or reassign it; else 404, as for no such
    task."""
    try:
        task = taskpage.task_rows().get(pk=pk)
    except (HumanTask.DoesNotExist, ValueError):
        raise Http404(_("No such task.")) from None
    user = request.user
    if not (
        can_complete_task(task, user) or can_view_task(user, task) or can_reassign_task(task, user)
    ):
        raise Http404(_("No such task."))
    return task


@login_required
def task(request: HttpRequest, pk: int) -> HttpResponse:
    """The task page: its data; for who may complete it, the step's form and buttons."""
    task = _visible_task(request, pk)
    step, problem = taskpage.task_step(task)
    outcome = None
    if request.method == "POST":
        outcome = taskpage.complete(
            request,
            task,
            step,
            instance_text=lambda instance: format_html("{}", instance_label(instance)),
        )
        if outcome.status != "invalid":
            done = safe_next(request, _inbox_url())
            return _respond(request, task.pk, outcome, done=done)
    return _task_page(request, task, step, problem, outcome)


@require_POST
@login_required
def reassign(request: HttpRequest, pk: int) -> HttpResponse:
    """Hand the task to another user or to groups; its errors shown on the task page."""
    task = _visible_task(request, pk)
    outcome = taskpage.reassign(request, task)
    if outcome.status != "invalid":
        return _respond(request, task.pk, outcome, done=_task_url(task.pk))
    step, problem = taskpage.task_step(task)
    return _task_page(request, task, step, problem, None, outcome)


@require_POST
@login_required
def comment(request: HttpRequest, pk: int) -> HttpResponse:
    """Add a comment to the task (and so to its instance); back to its comments."""
    task = _visible_task(request, pk)
    taskcomments.add_comment(request, task)
    return HttpResponseRedirect(_task_url(task.pk) + "#dwf-comments")


@require_POST
@login_required
def claim(request: HttpRequest, pk: int) -> HttpResponse:
    return _claim(request, pk, claim=True)


@require_POST
@login_required
def unclaim(request: HttpRequest, pk: int) -> HttpResponse:
    return _claim(request, pk, claim=False)


def _claim(request: HttpRequest, pk: int, *, claim: bool) -> HttpResponse:
    task = _visible_task(request, pk)
    outcome = taskpage.claim(task.pk, request.user, claim=claim)
    here = _task_url(task.pk)
    return _respond(request, task.pk, outcome, done=safe_next(request, here))


def _respond(request: HttpRequest, pk: Any, outcome: taskpage.Outcome, *, done: str) -> Any:
    return taskpage.respond(
        request, outcome, inbox=_inbox_url(), here=_task_url(pk), done=done, refuse=_refuse
    )


def _task_page(
    request: HttpRequest,
    task: HumanTask,
    step: BaseHumanStep | None,
    problem: str,
    completing: taskpage.Outcome | None,
    reassigning: taskpage.Outcome | None = None,
) -> HttpResponse:
    context = {
        **taskpage.page_context(request, task, step, problem, completing, reassigning),
        "title": task.title,
        "instance_display": instance_label(task.instance),
        "urls": APP_URLS,
    }
    return render(request, "django_workflows/task.html", context)
