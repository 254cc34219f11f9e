"""The inbox and the task page, without the views: what the admin's pages
(``admin/tasks.py``) and the app's own pages (``views.py``) share, so that both list,
complete, claim and reassign a task the same way and say the same things.

Each function returns an ``Outcome`` (what happened, the message to show, the form to
show again); the views turn it into their responses (a redirect into the admin or into
the app, a 403 page of their own). Who may do what is asked of ``permissions.py``;
the engine enforces it again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .engine import get_engine
from .exceptions import StateConflict, TaskNotFound, WorkflowError
from .forms import form_for_step, page_form_for_step
from .inboxrows import attach_group_names
from .models import HumanTask, TaskStatus, WorkflowInstance
from .paging import TASK_LIST_DEFERRED, BoundedPaginator
from .permissions import (
    COMPLETE_ANY_TASK,
    can_complete_task,
    can_reassign_task,
    completable_tasks,
)
from .steps import BaseHumanStep
from .taskcomments import comments_context

INBOX_PAGE_SIZE = 50

# -- showing values ------------------------------------------------------------------


def pretty_json(value: Any) -> str:
    """Indented JSON text (escape it when rendering: templates and format_html do)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)


def compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)


def short_id(instance_id: Any) -> str:
    return str(instance_id)[:8]


def instance_label(instance: WorkflowInstance) -> str:
    return f"{instance.definition.name} {instance.definition.version} #{short_id(instance.pk)}"


def safe_next(request: HttpRequest, default: str) -> str:
    """The ``next`` parameter if it points into this site, else ``default``."""
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def is_overdue(task: HumanTask, now: Any = None) -> bool:
    return (
        task.status == TaskStatus.OPEN
        and task.due_at is not None
        and task.due_at < (now or timezone.now())
    )


def display_rows(step: BaseHumanStep | None, context: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of the context values the step shows above its form, in order; a
    value that is not text is shown as compact JSON, a missing one as a dash."""
    if step is None:
        return []
    return [(label, _shown(value)) for _key, label, value in step.get_display(context)]


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else compact_json(value)


# -- the inbox -----------------------------------------------------------------------


def task_rows() -> QuerySet[HumanTask]:
    return HumanTask.objects.select_related(
        "instance__definition", "assignee", "claimed_by", "completed_by"
    )


def inbox_page(user: Any, asked: Any, per_page: int = INBOX_PAGE_SIZE) -> Page:
    """A page of "My tasks": the open tasks ``user`` may complete, due first; each task
    knows whether it is ``overdue``."""
    tasks = completable_tasks(user, task_rows().defer(*TASK_LIST_DEFERRED)).order_by(
        F("due_at").asc(nulls_last=True), "created_at", "pk"
    )
    page = BoundedPaginator(tasks, per_page, asked).get_page(asked)
    now = timezone.now()
    for task in page:
        task.overdue = is_overdue(task, now)
    attach_group_names(page)  # not prefetch_related: no reference cycles (inboxrows.py)
    return page


# -- the task page -------------------------------------------------------------------

#: What an action's button looks like: a kind of ``BaseHumanStep.action_kinds``.
BUTTON_CLASSES = {"primary": "button default", "danger": "button dwf-danger", "default": "button"}


def action_buttons(step: BaseHumanStep | None) -> list[dict[str, str]]:
    """The step's action buttons, styled by their kind (a "danger" one asks to confirm)."""
    return [
        {"label": label, "kind": kind, "css": BUTTON_CLASSES.get(kind, "button")}
        for label, kind in (step.get_action_kinds() if step is not None else [])
    ]


@dataclass
class Outcome:
    """What a request on a task came to.

    ``status``: ``"done"`` (say ``message``, go on), ``"invalid"`` (show the page again
    with ``form`` and ``errors``), ``"refused"`` (a 403 saying ``message``), ``"stale"``
    (the task is not open any more: say ``message``, show the task again) or ``"gone"``
    (no such task: say ``message``, go to the inbox).
    """

    status: str
    message: str = ""
    level: int = messages.SUCCESS
    form: Any = None
    errors: list[str] = field(default_factory=list)
    #: After a reassignment: whether the user still may complete the task.
    still_yours: bool = True


def task_step(task: HumanTask) -> tuple[BaseHumanStep | None, str]:
    """The task's step from the registry, or None and why not."""
    row = task.instance.definition
    try:
        definition = get_engine().registry.get_definition(row.name, row.version)
    except WorkflowError as exc:
        return None, str(exc)
    step = definition.steps.get(task.step_name)
    if not isinstance(step, BaseHumanStep):
        return None, _("workflow %(definition)s has no human step %(step)s") % {
            "definition": row,
            "step": task.step_name,
        }
    return step, ""


def page_context(
    request: HttpRequest,
    task: HumanTask,
    step: BaseHumanStep | None,
    problem: str,
    completing: Outcome | None = None,
    reassigning: Outcome | None = None,
) -> dict[str, Any]:
    """What the task page shows (``django_workflows/includes/task_body.html``) to the
    request's user; ``completing`` and ``reassigning``: a refused form to show again."""
    user = request.user
    allowed = can_complete_task(task, user)
    task_open = task.status == TaskStatus.OPEN
    if completing is not None:
        form = completing.form
    else:
        form_class = page_form_for_step(step) if step is not None else None
        form = form_class() if form_class is not None else None
    if form is not None and step is not None:
        hide_fields_set_by_actions(form, step)
    return {
        "task": task,
        "step": step,
        "problem": problem,
        "form": form,
        "errors": completing.errors if completing else [],
        "buttons": action_buttons(step),
        "can_complete": allowed and task_open and step is not None,
        "may_complete": allowed,
        "overdue": is_overdue(task),
        "candidate_groups": list(task.candidate_groups.all()),
        "context_json": pretty_json(task.instance.context),
        "display_rows": display_rows(step, task.instance.context),
        "can_claim": task_open and allowed and task.claimed_by_id is None,
        "can_unclaim": task_open
        and task.claimed_by_id is not None
        and (task.claimed_by_id == user.pk or user.has_perm(COMPLETE_ANY_TASK)),
        "can_reassign": task_open and can_reassign_task(task, user),
        "reassign_form": reassigning.form if reassigning else ReassignForm(),
        "reassign_errors": reassigning.errors if reassigning else [],
        "next": safe_next(request, ""),
        "comment": request.POST.get("_comment", ""),
        "comment_hint": comment_hint(step),
        **comments_context(user, task),
    }


def comment_hint(step: BaseHumanStep | None) -> str:
    """What the comment field says of ``comment_required``: when a comment is needed."""
    required = step.comment_required if step is not None else ()
    if required is True:
        return _("required")
    if required:
        return _("required to %(actions)s") % {"actions": ", ".join(required)}
    return ""


def respond(
    request: HttpRequest,
    outcome: Outcome,
    *,
    inbox: str,
    here: str,
    done: str,
    refuse: Callable[[str], HttpResponse],
) -> HttpResponse:
    """The response to an outcome that is not a form to show again: a 403 (``refuse``)
    or the message and a redirect: to ``done`` (to the inbox after handing the task
    away), to the inbox when there is no such task, else back to the task (``here``)."""
    if outcome.status == "refused":
        return refuse(outcome.message)
    messages.add_message(request, outcome.level, outcome.message)
    if outcome.status == "done":
        return HttpResponseRedirect(done if outcome.still_yours else inbox)
    return HttpResponseRedirect(inbox if outcome.status == "gone" else here)


def hide_fields_set_by_actions(form: Any, step: BaseHumanStep) -> None:
    """A field every button sets (``approved`` for Approve/Reject) is not asked for."""
    if not step.actions:
        return
    names = set.intersection(*(set(values) for values in step.actions.values()))
    for name in names & set(form.fields):
        form.fields[name].widget = forms.HiddenInput()


def complete(
    request: HttpRequest,
    task: HumanTask,
    step: BaseHumanStep | None,
    *,
    instance_text: Callable[[WorkflowInstance], SafeString],
) -> Outcome:
    """Validate the pressed action's form and hand the data to the engine.

    ``instance_text``: the instance as the success message names it (a link in the admin).
    """
    form_class = page_form_for_step(step) if step is not None else None
    if task.status != TaskStatus.OPEN:
        return _stale(task)
    allowed = can_complete_task(task, request.user)
    action = request.POST.get("_action") or None
    data: dict[str, Any] = {}
    form = None
    if allowed and step is not None:  # else the engine refuses (403) or the page says why
        if action is not None and action not in step.actions:
            return Outcome(
                "invalid",
                form=form_class() if form_class else None,
                errors=[_("Unknown action “%(action)s”.") % {"action": action}],
            )
        # The button's own form (a Reject asking only for comments) validates, the
        # page's form shows its errors.
        action_form_class = form_for_step(step, action)
        if action_form_class is not None:
            submitted = request.POST.copy()
            for key, value in (step.actions.get(action) or {}).items() if action else ():
                submitted[key] = value
            checked = action_form_class(data=submitted, files=request.FILES)
            valid = checked.is_valid()
            form = checked
            if action_form_class is not form_class and form_class is not None:
                form = form_class(data=submitted, files=request.FILES)
                form.full_clean()
                form._errors = checked.errors  # the button's errors, not the page form's
            if not valid:
                return Outcome("invalid", form=form)
            # The raw values, as the form read them: the engine validates them again.
            data = {name: checked[name].data for name in checked.fields}
    elif step is None:
        return Outcome("invalid")
    try:
        instance = get_engine().complete_task(
            task.pk,
            request.user,
            data,
            action=action,
            check_permission=True,
            comment=request.POST.get("_comment", ""),
        )
    except PermissionDenied as exc:
        return Outcome("refused", str(exc) or _("You may not complete this task."))
    except StateConflict as exc:  # TaskNotOpen included: someone else was faster
        task.refresh_from_db()
        return _stale(task, exc)
    except TaskNotFound as exc:
        return Outcome("gone", str(exc), messages.WARNING)
    except ValidationError as exc:
        return Outcome("invalid", form=form, errors=errors_into(form, exc))
    except WorkflowError as exc:
        return Outcome("invalid", form=form, errors=[str(exc)])
    message = format_html(
        _("Task “{}” is completed{}. {} is now {}."),
        task.title,
        format_html(" ({})", action) if action else "",
        instance_text(instance),
        instance.get_status_display().lower(),
    )
    return Outcome("done", message)


def _stale(task: HumanTask, error: Exception | None = None) -> Outcome:
    """The task is not open (any more), or its instance does not wait for it."""
    if task.status == TaskStatus.COMPLETED:
        by = task.completed_by.get_username() if task.completed_by else _("someone")
        text = _("Task “%(title)s” was already completed by %(user)s; nothing was changed.") % {
            "title": task.title,
            "user": by,
        }
    elif task.status != TaskStatus.OPEN:
        text = _("Task “%(title)s” is %(status)s; nothing was changed.") % {
            "title": task.title,
            "status": task.get_status_display().lower(),
        }
    else:  # the instance is not waiting for it (failed, canceled) or a race we lost
        text = _("Task “%(title)s” cannot be completed now: %(error)s. Nothing was changed.") % {
            "title": task.title,
            "error": error,
        }
    return Outcome("stale", text, messages.WARNING)


_CODE = re.compile(r"[a-z][a-z0-9_]*")


def errors_into(form: Any, exc: ValidationError) -> list[str]:
    """Put the engine's validation errors on the form's fields; return the rest."""
    rest: list[str] = []
    if hasattr(exc, "error_dict"):
        for name, errors in exc.error_dict.items():
            texts = _texts(errors)
            if form is not None and name in form.fields:
                form.add_error(name, texts)
            else:
                rest.extend(texts if name == "__all__" else [f"{name}: {t}" for t in texts])
    else:
        rest.extend(exc.messages)
    return rest


def _texts(errors: list[ValidationError]) -> list[str]:
    """The messages of one field's errors.

    The engine raises ``ValidationError(form.errors.get_json_data())``, which turns each
    ``{"message": ..., "code": ...}`` into two errors: the message and the bare code.
    Bare codes (``invalid``, ``min_value``) are dropped here.
    """
    texts = [text for error in errors for text in error.messages]
    kept = [t for t in texts if not _CODE.fullmatch(t)]
    return kept or texts


def _refusal(exc: Exception) -> Outcome:
    """The engine said no: not allowed (403), no such task, or not open (a message)."""
    if isinstance(exc, PermissionDenied):
        return Outcome("refused", str(exc))
    return Outcome("gone" if isinstance(exc, TaskNotFound) else "stale", str(exc), messages.WARNING)


def claim(task_id: Any, user: Any, *, claim: bool) -> Outcome:
    """Claim (or unclaim) a task through the engine."""
    engine = get_engine()
    try:
        task = engine.claim_task(task_id, user) if claim else engine.unclaim_task(task_id, user)
    except (PermissionDenied, TaskNotFound, StateConflict) as exc:
        return _refusal(exc)
    text = (
        _("You claimed task “%(title)s”: it is yours until you unclaim it.")
        if claim
        else _("Task “%(title)s” is unclaimed: its candidates see it again.")
    )
    return Outcome("done", text % {"title": task.title})


# -- reassigning ---------------------------------------------------------------------


class ReassignForm(forms.Form):
    """Whom to hand a task to: a user by username, or group names; and why."""

    username = forms.CharField(
        label=gettext_lazy("To the user"), required=False, max_length=150, strip=True
    )
    groups = forms.CharField(
        label=gettext_lazy("Or to the groups"),
        required=False,
        max_length=1000,
        help_text=gettext_lazy("Group names, separated by commas."),
    )
    reason = forms.CharField(
        label=gettext_lazy("Reason"), required=False, max_length=1000, widget=forms.Textarea
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        names = [name.strip() for name in data.get("groups", "").split(",") if name.strip()]
        data["group_names"] = names
        if bool(data.get("username")) == bool(names):
            raise ValidationError(_("Give either a user or groups."))
        if data.get("username"):
            model = get_user_model()
            try:
                data["user"] = model._default_manager.get_by_natural_key(data["username"])
            except model.DoesNotExist:
                self.add_error(
                    "username", _("There is no user “%(name)s”.") % {"name": data["username"]}
                )
        return data


def reassign(request: HttpRequest, task: HumanTask) -> Outcome:
    """Hand ``task`` to the user or groups of the posted ``ReassignForm``."""
    # Refused before the form is read: the page shows the form's errors only to who
    # may reassign, so a refused user with bad input would see nothing happen.
    if task.status != TaskStatus.OPEN:
        return _stale(task)
    if not can_reassign_task(task, request.user):
        return _refusal(PermissionDenied(f"you may not reassign task {task.pk} ({task.title})"))
    form = ReassignForm(data=request.POST)
    if not form.is_valid():
        return Outcome("invalid", form=form)
    data = form.cleaned_data
    to = data["group_names"] or data["user"]
    try:
        get_engine().reassign_task(task.pk, to, by=request.user, reason=data["reason"])
    except (PermissionDenied, TaskNotFound, StateConflict) as exc:
        return _refusal(exc)
    except ValidationError as exc:
        return Outcome("invalid", form=form, errors=errors_into(form, exc))
    task = task_rows().get(pk=task.pk)
    target = ", ".join(data["group_names"]) or data["user"].get_username()
    text = _("Task “%(title)s” is reassigned to %(target)s.") % {
        "title": task.title,
        "target": target,
    }
    return Outcome("done", text, still_yours=can_complete_task(task, request.user))
