"""Bulk approval in the admin: the tasks ticked in "My tasks", completed with one form.

One page for the selection: when the tasks' steps share their form (the same step of
the same definition version, or steps with the same form, actions and rules), it shows
that form and the actions once; submitted, every task is completed the same way by
``engine.complete_tasks`` (each in its own transaction, the task rule checked) and the
page reports per task what happened. Selected tasks whose steps differ get nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..engine import get_engine
from ..engine.bulk import MAX_TASKS
from ..exceptions import WorkflowError
from ..forms import form_for_step, page_form_for_step
from ..models import HumanTask
from ..permissions import completable_tasks, visible_tasks
from ..steps import BaseHumanStep
from ..taskpage import action_buttons, comment_hint
from ._common import TEMPLATE_DIR


def selected_ids(request: HttpRequest) -> list[int]:
    """The ticked task ids (``task``), numbers only, at most ``MAX_TASKS``."""
    values = request.POST.getlist("task") if request.method == "POST" else []
    values = values or request.GET.getlist("task")
    ids = list(dict.fromkeys(int(v) for v in values if v.isdigit()))
    return ids[:MAX_TASKS]


def step_of(task: HumanTask) -> BaseHumanStep | None:
    row = task.instance.definition
    try:
        step = get_engine().registry.get_definition(row.name, row.version).steps.get(task.step_name)
    except WorkflowError:
        return None
    return step if isinstance(step, BaseHumanStep) else None


def shape(step: BaseHumanStep) -> tuple[Any, ...]:
    """What a completion through ``step`` takes: steps with the same shape share a form."""
    return (
        step.form_class,
        repr(step.form_schema),
        repr(dict(step.actions)),
        repr(dict(step.action_forms)),
        step.fields,
        repr(step.comment_required),
    )


class BulkCompleteMixin:
    """The "Complete selected" page of the human task admin (``bulk_complete_view``)."""

    def bulk_complete_view(self, request: HttpRequest) -> HttpResponse:
        inbox = reverse("admin:django_workflows_humantask_inbox")
        ids = selected_ids(request)
        # Shown: the tasks the user may complete. Submitted: every selected task they may
        # see, so that one completed or taken in between is reported, not skipped.
        rule = visible_tasks if request.method == "POST" else completable_tasks
        tasks = list(
            rule(request.user, HumanTask.objects.filter(pk__in=ids))
            .select_related("instance__definition")
            .order_by("created_at", "pk")
        )
        if not tasks:
            self.message_user(  # type: ignore[attr-defined]
                request, _("Select the tasks to complete first."), messages.WARNING
            )
            return HttpResponseRedirect(inbox)
        steps = {(t.instance.definition_id, t.step_name): step_of(t) for t in tasks}
        shapes = {shape(step) if step is not None else None for step in steps.values()}
        step = next(iter(steps.values()))
        shared = step is not None and len(shapes) == 1
        form_class = page_form_for_step(step) if shared and step is not None else None
        form = form_class() if form_class is not None else None
        errors: list[str] = []
        if request.method == "POST" and shared and step is not None:
            done, form, errors = self._bulk_complete(request, tasks, step, form_class)
            if done:
                return HttpResponseRedirect(inbox)
        request.current_app = self.admin_site.name  # type: ignore[attr-defined]
        context = {
            **self._context(request, title=_("Complete the selected tasks")),  # type: ignore[attr-defined]
            "tasks": tasks,
            "left_out": len(ids) - len(tasks),
            "shared": shared,
            "step": step,
            "form": form,
            "errors": errors,
            "buttons": action_buttons(step if shared else None),
            "comment": request.POST.get("_comment", ""),
            "comment_hint": comment_hint(step if shared else None),
            "media": self.media + form.media if form is not None else self.media,  # type: ignore[attr-defined]
        }
        return TemplateResponse(request, f"{TEMPLATE_DIR}/humantask/bulk_complete.html", context)

    def _bulk_complete(
        self, request: HttpRequest, tasks: list[HumanTask], step: BaseHumanStep, form_class: Any
    ) -> tuple[bool, Any, list[str]]:
        """Validate the one form, then complete every task; whether it was done."""
        action = request.POST.get("_action") or None
        if action is not None and action not in step.actions:
            return False, form_class() if form_class else None, [_("Unknown action.")]
        data: dict[str, Any] = {}
        form: Any = form_class() if form_class else None
        checked_class = form_for_step(step, action)
        if checked_class is not None:
            submitted = request.POST.copy()
            for key, value in (step.actions.get(action) or {}).items() if action else ():
                submitted[key] = value
            checked = checked_class(data=submitted)
            form = checked if checked_class is form_class else form_class(data=submitted)
            if not checked.is_valid():
                if form is not checked:
                    form.full_clean()
                    form._errors = checked.errors
                return False, form, []
            data = {name: checked[name].data for name in checked.fields}
        results = get_engine().complete_tasks(
            [task.pk for task in tasks],
            request.user,
            action=action,
            data=data,
            comment=request.POST.get("_comment", ""),
        )
        titles = {task.pk: task.title for task in tasks}
        done = [result for result in results if result.completed]
        if done:
            self.message_user(  # type: ignore[attr-defined]
                request,
                ngettext("%(count)d task completed.", "%(count)d tasks completed.", len(done))
                % {"count": len(done)},
                messages.SUCCESS,
            )
        refused = [result for result in results if not result.completed]
        if refused and len(refused) == len(results) and {r.code for r in refused} == {"invalid"}:
            # The same input refused for every task: show it on the form, nothing changed.
            return False, form, sorted({result.reason for result in refused})
        for result in refused:
            self.message_user(  # type: ignore[attr-defined]
                request,
                _("Task “%(title)s” (#%(id)s) was not completed: %(reason)s")
                % {
                    "title": titles.get(result.task_id, ""),
                    "id": result.task_id,
                    "reason": result.reason,
                },
                messages.WARNING,
            )
        return True, form, []
