"""Human tasks: the list, "My tasks" (the inbox), the task page, claim, unclaim, reassign.

Who may complete, claim or see a task in the inbox is the task rule of
``permissions.py``, enforced by the engine; these views only ask it and report. What
they do is ``taskpage.py``'s, shared with the app's own pages (``views.py``).
The inbox and the task pages need no model permission: any active staff user sees
the tasks the rule gives them. The list of tasks shows the tasks the user may see
(``visible_tasks``: the tasks of their instances; every task with ``view_humantask``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import taskpage
from ..inboxrows import attach_group_names
from ..models import HumanTask
from ..paging import TASK_LIST_DEFERRED
from ..permissions import (
    can_complete_task,
    can_view_instance,
    can_view_task,
    is_active_user,
    sees_every_instance,
    sees_every_task,
    visible_tasks,
)
from ..steps import BaseHumanStep
from ..taskpage import BoundedPaginator, is_overdue
from ._common import (
    TEMPLATE_DIR,
    forbidden,
    instance_link,
    lookup,
    pretty_json,
    safe_next,
    status_badge,
)
from .bulk import BulkCompleteMixin
from .columns import TaskColumns, short_datetime
from .listing import BoundedListMixin
from .release import ReleasingTemplateResponse

__all__ = ["BoundedPaginator", "HumanTaskAdmin"]

INBOX_PAGE_SIZE = 50
#: The URL names the shared task page (``django_workflows/includes/task_body.html``) posts to.
ADMIN_URLS = {
    "task": "admin:django_workflows_humantask_complete",
    "claim": "admin:django_workflows_humantask_claim",
    "unclaim": "admin:django_workflows_humantask_unclaim",
    "reassign": "admin:django_workflows_humantask_reassign",
}


@admin.register(HumanTask)
class HumanTaskAdmin(BoundedListMixin, BulkCompleteMixin, TaskColumns, admin.ModelAdmin):
    # Short cells (see columns.py): every column fits 1280 px with the nav sidebar open.
    list_display = (
        "title",
        "summary",
        "status_display",
        "instance_display",
        "for_display",
        "due_display",
        "completed_by_display",
        "result_short",
    )
    list_filter = (
        "status",
        ("due_at", admin.DateFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("instance__definition", "assignee", "claimed_by", "completed_by")
    list_per_page = 50
    search_fields = ("title",)
    ordering = ("-created_at",)
    sortable_by = ("title", "status_display", "due_display")
    fields = (
        "title",
        "description",
        "status_display",
        "close_reason",
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
        rows = self._all_rows(request).defer(*TASK_LIST_DEFERRED)
        return visible_tasks(request.user, rows)

    def prepare_rows(self, rows: list[HumanTask]) -> None:
        """The "for" column's group names, one query (not prefetch_related: inboxrows.py)."""
        attach_group_names(rows)

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
        return status_badge(obj)

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
        due = short_datetime(obj.due_at)
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
            path("bulk-complete/", view(self.bulk_complete_view), name="{}_{}_bulk".format(*info)),
            path(
                "<path:object_id>/complete/",
                view(self.complete_view),
                name="{}_{}_complete".format(*info),
            ),
            path(
                "<path:object_id>/claim/", view(self.claim_view), name="{}_{}_claim".format(*info)
            ),
            path(
                "<path:object_id>/reassign/",
                view(self.reassign_view),
                name="{}_{}_reassign".format(*info),
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
        page = taskpage.inbox_page(request.user, request.GET.get("p"), INBOX_PAGE_SIZE)
        request.current_app = self.admin_site.name
        return ReleasingTemplateResponse(
            request,
            f"{TEMPLATE_DIR}/humantask/inbox.html",
            self._context(
                request,
                title=_("My tasks"),
                page=page,
                tasks=list(page),
                urls={
                    **ADMIN_URLS,
                    "bulk": "admin:django_workflows_humantask_bulk",
                    "instance": "admin:django_workflows_workflowinstance_change"
                    if self._can_view_instances(request)
                    else "",
                },
            ),
        )

    def _task_or_refusal(self, request: HttpRequest, object_id: str) -> Any:
        """The task, or the response saying there is none or it is not for the user."""
        task = self.get_object(request, unquote(object_id))
        if task is None:
            self.message_user(
                request,
                _("There is no task with id “%(id)s”.") % {"id": object_id},
                messages.WARNING,
            )
            return HttpResponseRedirect(reverse("admin:django_workflows_humantask_inbox"))
        if not can_complete_task(task, request.user) and not self.has_view_permission(
            request, task
        ):
            return forbidden(
                request,
                self.admin_site,
                _("You may not complete or see task “%(title)s”.") % {"title": task.title},
            )
        return task

    def complete_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The task page: its data, and for who may complete it, the step's form."""
        task = self._task_or_refusal(request, object_id)
        if not isinstance(task, HumanTask):
            return task
        step, problem = taskpage.task_step(task)
        outcome = None
        if request.method == "POST":
            outcome = taskpage.complete(
                request,
                task,
                step,
                instance_text=lambda instance: instance_link(
                    instance, linked=can_view_instance(request.user, instance)
                ),
            )
            if outcome.status != "invalid":
                return self._respond(request, task, outcome, done=safe_next(request, _inbox()))
        return self._task_page(request, task, step, problem, outcome)

    def reassign_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Hand the task to another user or to groups (``can_reassign_task``)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        task = self._task_or_refusal(request, object_id)
        if not isinstance(task, HumanTask):
            return task
        outcome = taskpage.reassign(request, task)
        if outcome.status != "invalid":
            return self._respond(request, task, outcome, done=self._here(task))
        step, problem = taskpage.task_step(task)
        return self._task_page(request, task, step, problem, None, reassigning=outcome)

    def _here(self, task: HumanTask) -> str:
        return reverse("admin:django_workflows_humantask_complete", args=[task.pk])

    def _task_page(
        self,
        request: HttpRequest,
        task: HumanTask,
        step: BaseHumanStep | None,
        problem: str,
        completing: taskpage.Outcome | None,
        reassigning: taskpage.Outcome | None = None,
    ) -> TemplateResponse:
        context = self._context(
            request,
            **taskpage.page_context(request, task, step, problem, completing, reassigning),
            title=task.title,
            instance_display=instance_link(
                task.instance, linked=can_view_instance(request.user, task.instance)
            ),
            urls=ADMIN_URLS,
        )
        form = context["form"]
        context["media"] = self.media + form.media if form is not None else self.media
        request.current_app = self.admin_site.name
        return TemplateResponse(request, f"{TEMPLATE_DIR}/humantask/complete.html", context)

    def _respond(
        self, request: HttpRequest, task: HumanTask, outcome: taskpage.Outcome, *, done: str
    ) -> HttpResponse:
        return taskpage.respond(
            request,
            outcome,
            inbox=_inbox(),
            here=self._here(task),
            done=done,
            refuse=lambda text: forbidden(request, self.admin_site, text),
        )

    def claim_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._claim(request, object_id, claim=True)

    def unclaim_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._claim(request, object_id, claim=False)

    def _claim(self, request: HttpRequest, object_id: str, *, claim: bool) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        outcome = taskpage.claim(unquote(object_id), request.user, claim=claim)
        here = reverse("admin:django_workflows_humantask_complete", args=[unquote(object_id)])
        return taskpage.respond(
            request,
            outcome,
            inbox=_inbox(),
            here=here,
            done=safe_next(request, here),
            refuse=lambda text: forbidden(request, self.admin_site, text),
        )


def _inbox() -> str:
    return reverse("admin:django_workflows_humantask_inbox")
