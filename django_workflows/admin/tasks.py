"""Human tasks: the list, "My tasks" (the inbox), the completion page, claim and unclaim.

Who may complete, claim or see a task in the inbox is the task rule of
``permissions.py``, enforced by the engine; these views only ask it and report.
The inbox and the task pages need no model permission: any active staff user sees
the tasks the rule gives them. The list of tasks shows the tasks the user may see
(``visible_tasks``: the tasks of their instances; every task with ``view_humantask``).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..engine import get_engine
from ..exceptions import StateConflict, TaskNotFound, WorkflowError
from ..forms import form_for_step, page_form_for_step
from ..models import HumanTask, TaskStatus
from ..paging import COUNT_LIMIT, bounded_count
from ..permissions import (
    COMPLETE_ANY_TASK,
    can_complete_task,
    can_view_instance,
    can_view_task,
    completable_tasks,
    is_active_user,
    sees_every_instance,
    sees_every_task,
    visible_tasks,
)
from ..steps import BaseHumanStep
from ._common import (
    TEMPLATE_DIR,
    badge,
    compact_json,
    forbidden,
    instance_link,
    lookup,
    pretty_json,
    safe_next,
)

INBOX_PAGE_SIZE = 50


class BoundedPaginator(Paginator):
    """Counts at most ``count_limit`` rows past the page asked for.

    The inbox's filter is evaluated per row; an exact count would read every open task
    on every page. ``count_is_exact`` says whether there are more.
    """

    count_limit = COUNT_LIMIT
    count_is_exact = True

    def __init__(self, object_list: Any, per_page: int, page: Any) -> None:
        super().__init__(object_list, per_page)
        try:
            self.page_asked = max(int(page), 1)
        except (TypeError, ValueError):
            self.page_asked = 1

    @cached_property
    def count(self) -> int:
        bound = self.page_asked * self.per_page + self.count_limit
        count, self.count_is_exact = bounded_count(self.object_list, bound)
        return count


_CODE = re.compile(r"[a-z][a-z0-9_]*")


def is_overdue(task: HumanTask, now: Any = None) -> bool:
    return (
        task.status == TaskStatus.OPEN
        and task.due_at is not None
        and task.due_at < (now or timezone.now())
    )


@admin.register(HumanTask)
class HumanTaskAdmin(admin.ModelAdmin):
    list_display = (
        "title",
        "summary",
        "status_display",
        "step_name",
        "instance_display",
        "assignee",
        "claimed_by",
        "due_display",
        "created_at",
        "completed_by",
    )
    list_filter = (
        "status",
        ("due_at", admin.DateFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("instance__definition", "assignee", "claimed_by", "completed_by")
    list_per_page = 50
    show_full_result_count = False
    search_fields = ("title",)
    ordering = ("-created_at",)
    sortable_by = ("title", "status_display", "due_display", "created_at")
    fields = (
        "title",
        "description",
        "status_display",
        "instance_display",
        "step_name",
        "assignee",
        "candidate_groups_display",
        "claimed_by",
        "due_display",
        "created_at",
        "completed_by",
        "completed_on_behalf_of",
        "completed_at",
        "result_display",
    )
    readonly_fields = (*fields, "instance_text")

    # -- permissions: read-only -----------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # tasks are completed, claimed and unclaimed through the engine

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The list: anyone (it shows ``visible_tasks``); a task: ``can_view_task``."""
        if obj is None:
            return is_active_user(request.user)
        return can_view_task(request.user, obj)

    def _can_view_instances(self, request: HttpRequest) -> bool:
        """Whether every task the user is shown has an instance they may see, to link.

        True with a permission that shows every instance, and for users who see only
        the tasks of their own instances; not for who sees all tasks without that.
        """
        user = request.user
        return sees_every_instance(user) or not sees_every_task(user)

    # -- list and detail ------------------------------------------------------------

    def _all_rows(self, request: HttpRequest) -> QuerySet[HumanTask]:
        return (
            super()
            .get_queryset(request)
            .select_related("instance__definition", "assignee", "claimed_by", "completed_by")
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[HumanTask]:
        return visible_tasks(request.user, self._all_rows(request))

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> HumanTask | None:
        # Among all rows: one the user may not see is refused (403), not "deleted".
        return lookup(self._all_rows(request), object_id, from_field)

    def _swap_instance_column(self, request: HttpRequest, names: Any) -> list[str]:
        """Link the instance only for users who may view instances."""
        if self._can_view_instances(request):
            return list(names)
        return ["instance_text" if n == "instance_display" else n for n in names]

    def get_list_display(self, request: HttpRequest) -> list[str]:
        return self._swap_instance_column(request, super().get_list_display(request))

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self._swap_instance_column(request, super().get_fields(request, obj))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        extra = {
            **(extra_context or {}),
            "task_url": reverse("admin:django_workflows_humantask_complete", args=[object_id]),
            "inbox_url": reverse("admin:django_workflows_humantask_inbox"),
        }
        return super().change_view(request, object_id, form_url, extra)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra = {
            **(extra_context or {}),
            "inbox_url": reverse("admin:django_workflows_humantask_inbox"),
        }
        return super().changelist_view(request, extra)

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_display(self, obj: HumanTask) -> SafeString:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description=gettext_lazy("workflow instance"))
    def instance_display(self, obj: HumanTask) -> SafeString:
        return instance_link(obj.instance)

    @admin.display(description=gettext_lazy("workflow instance"))
    def instance_text(self, obj: HumanTask) -> SafeString:
        return instance_link(obj.instance, linked=False)

    @admin.display(description=gettext_lazy("candidate groups"))
    def candidate_groups_display(self, obj: HumanTask) -> str:
        return ", ".join(group.name for group in obj.candidate_groups.all()) or "-"

    @admin.display(description=gettext_lazy("due"), ordering="due_at")
    def due_display(self, obj: HumanTask) -> SafeString:
        if obj.due_at is None:
            return mark_safe("-")
        due = timezone.localtime(obj.due_at).strftime("%Y-%m-%d %H:%M")
        if is_overdue(obj):
            return format_html(
                '{} <span class="dwf-badge dwf-badge-overdue">{}</span>', due, _("overdue")
            )
        return format_html("{}", due)

    @admin.display(description=gettext_lazy("result"))
    def result_display(self, obj: HumanTask) -> SafeString:
        return format_html('<pre class="dwf-pre">{}</pre>', pretty_json(obj.result))

    # -- the inbox, the completion page, claim and unclaim ----------------------------

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("inbox/", view(self.inbox_view), name="{}_{}_inbox".format(*info)),
            path(
                "<path:object_id>/complete/",
                view(self.complete_view),
                name="{}_{}_complete".format(*info),
            ),
            path(
                "<path:object_id>/claim/", view(self.claim_view), name="{}_{}_claim".format(*info)
            ),
            path(
                "<path:object_id>/unclaim/",
                view(self.unclaim_view),
                name="{}_{}_unclaim".format(*info),
            ),
            *super().get_urls(),
        ]

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "has_view_permission": self.has_view_permission(request),
            "can_view_instances": self._can_view_instances(request),
            "inbox_url": reverse("admin:django_workflows_humantask_inbox"),
            **extra,
        }

    def inbox_view(self, request: HttpRequest) -> HttpResponse:
        """My tasks: the open tasks the user may complete, due first."""
        tasks = (
            completable_tasks(request.user, self._all_rows(request))
            .prefetch_related("candidate_groups")
            .order_by(F("due_at").asc(nulls_last=True), "created_at", "pk")
        )
        asked = request.GET.get("p")
        page = BoundedPaginator(tasks, INBOX_PAGE_SIZE, asked).get_page(asked)
        now = timezone.now()
        for task in page:
            task.overdue = is_overdue(task, now)
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request,
            f"{TEMPLATE_DIR}/humantask/inbox.html",
            self._context(request, title=_("My tasks"), page=page, tasks=list(page)),
        )

    def _step(self, task: HumanTask) -> tuple[BaseHumanStep | None, str]:
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

    def complete_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The task page: its data, and for who may complete it, the step's form."""
        task = self.get_object(request, unquote(object_id))
        if task is None:
            self.message_user(
                request,
                _("There is no task with id “%(id)s”.") % {"id": object_id},
                messages.WARNING,
            )
            return HttpResponseRedirect(reverse("admin:django_workflows_humantask_inbox"))
        allowed = can_complete_task(task, request.user)
        if not allowed and not self.has_view_permission(request, task):
            return forbidden(
                request,
                self.admin_site,
                _("You may not complete or see task “%(title)s”.") % {"title": task.title},
            )
        step, problem = self._step(task)
        form_class = page_form_for_step(step) if step is not None else None
        form = form_class() if form_class is not None else None
        errors: list[str] = []
        if request.method == "POST":
            response, form, errors = self._complete(request, task, step, form_class, allowed)
            if response is not None:
                return response
        if form is not None and step is not None:
            _hide_fields_set_by_actions(form, step)
        task_open = task.status == TaskStatus.OPEN
        context = self._context(
            request,
            title=task.title,
            task=task,
            step=step,
            problem=problem,
            form=form,
            errors=errors,
            actions=list(step.actions) if step is not None else [],
            can_complete=allowed and task_open and step is not None,
            may_complete=allowed,
            overdue=is_overdue(task),
            candidate_groups=list(task.candidate_groups.all()),
            context_json=pretty_json(task.instance.context),
            display_rows=display_rows(step, task.instance.context),
            instance_display=instance_link(
                task.instance, linked=can_view_instance(request.user, task.instance)
            ),
            can_claim=task_open and allowed and task.claimed_by_id is None,
            can_unclaim=task_open
            and task.claimed_by_id is not None
            and (task.claimed_by_id == request.user.pk or request.user.has_perm(COMPLETE_ANY_TASK)),
            next=safe_next(request, ""),
            media=self.media + form.media if form is not None else self.media,
        )
        request.current_app = self.admin_site.name
        return TemplateResponse(request, f"{TEMPLATE_DIR}/humantask/complete.html", context)

    def _complete(
        self,
        request: HttpRequest,
        task: HumanTask,
        step: BaseHumanStep | None,
        form_class: Any,
        allowed: bool,
    ) -> tuple[HttpResponse | None, Any, list[str]]:
        """Validate and hand the data to the engine; a response, or the form to show again."""
        here = reverse("admin:django_workflows_humantask_complete", args=[task.pk])
        if task.status != TaskStatus.OPEN:
            self._report_not_open(request, task)
            return HttpResponseRedirect(here), None, []
        action = request.POST.get("_action") or None
        data: dict[str, Any] = {}
        form = None
        if allowed and step is not None:  # else the engine refuses (403) or the page says why
            if action is not None and action not in step.actions:
                return (
                    None,
                    form_class() if form_class else None,
                    [_("Unknown action “%(action)s”.") % {"action": action}],
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
                if action_form_class is not form_class:
                    form = form_class(data=submitted, files=request.FILES)
                    form.full_clean()
                    form._errors = checked.errors  # the button's errors, not the page form's
                if not valid:
                    return None, form, []
                # The raw values, as the form read them: the engine validates them again.
                data = {name: checked[name].data for name in checked.fields}
        elif step is None:
            return None, None, []
        try:
            instance = get_engine().complete_task(
                task.pk, request.user, data, action=action, check_permission=True
            )
        except PermissionDenied as exc:
            return (
                forbidden(
                    request, self.admin_site, str(exc) or _("You may not complete this task.")
                ),
                None,
                [],
            )
        except StateConflict as exc:  # TaskNotOpen included: someone else was faster
            task.refresh_from_db()
            self._report_not_open(request, task, exc)
            return HttpResponseRedirect(here), None, []
        except TaskNotFound as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return HttpResponseRedirect(reverse("admin:django_workflows_humantask_inbox")), None, []
        except ValidationError as exc:
            return None, form, self._errors_into(form, exc)
        except WorkflowError as exc:
            return None, form, [str(exc)]
        self.message_user(
            request,
            format_html(
                _("Task “{}” is completed{}. {} is now {}."),
                task.title,
                format_html(" ({})", action) if action else "",
                instance_link(instance, linked=can_view_instance(request.user, instance)),
                instance.get_status_display().lower(),
            ),
            messages.SUCCESS,
        )
        return (
            HttpResponseRedirect(
                safe_next(request, reverse("admin:django_workflows_humantask_inbox"))
            ),
            None,
            [],
        )

    @staticmethod
    def _errors_into(form: Any, exc: ValidationError) -> list[str]:
        """Put the engine's validation errors on the form's fields; return the rest."""
        rest: list[str] = []
        if hasattr(exc, "error_dict"):
            for field, errors in exc.error_dict.items():
                texts = _texts(errors)
                if form is not None and field in form.fields:
                    form.add_error(field, texts)
                else:
                    rest.extend(texts if field == "__all__" else [f"{field}: {t}" for t in texts])
        else:
            rest.extend(exc.messages)
        return rest

    def _report_not_open(
        self, request: HttpRequest, task: HumanTask, error: Exception | None = None
    ) -> None:
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
            text = _(
                "Task “%(title)s” cannot be completed now: %(error)s. Nothing was changed."
            ) % {
                "title": task.title,
                "error": error,
            }
        self.message_user(request, text, messages.WARNING)

    def claim_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._claim(request, object_id, claim=True)

    def unclaim_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._claim(request, object_id, claim=False)

    def _claim(self, request: HttpRequest, object_id: str, *, claim: bool) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        engine = get_engine()
        try:
            if claim:
                task = engine.claim_task(unquote(object_id), request.user)
            else:
                task = engine.unclaim_task(unquote(object_id), request.user)
        except PermissionDenied as exc:
            return forbidden(request, self.admin_site, str(exc))
        except TaskNotFound as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return HttpResponseRedirect(reverse("admin:django_workflows_humantask_inbox"))
        except StateConflict as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            text = (
                _("You claimed task “%(title)s”: it is yours until you unclaim it.")
                if claim
                else _("Task “%(title)s” is unclaimed: its candidates see it again.")
            )
            self.message_user(request, text % {"title": task.title}, messages.SUCCESS)
        default = reverse("admin:django_workflows_humantask_complete", args=[unquote(object_id)])
        return HttpResponseRedirect(safe_next(request, default))


def _hide_fields_set_by_actions(form: Any, step: BaseHumanStep) -> None:
    """A field every button sets (``approved`` for Approve/Reject) is not asked for."""
    if not step.actions:
        return
    names = set.intersection(*(set(values) for values in step.actions.values()))
    for name in names & set(form.fields):
        form.fields[name].widget = forms.HiddenInput()


def _texts(errors: list[ValidationError]) -> list[str]:
    """The messages of one field's errors.

    The engine raises ``ValidationError(form.errors.get_json_data())``, which turns each
    ``{"message": ..., "code": ...}`` into two errors: the message and the bare code.
    Bare codes (``invalid``, ``min_value``) are dropped here.
    """
    texts = [text for error in errors for text in error.messages]
    kept = [t for t in texts if not _CODE.fullmatch(t)]
    return kept or texts


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
