"""Workflow instances: the list, the detail page with its graph, cancel and retry."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from html import escape
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..engine import get_engine
from ..exceptions import WorkflowError
from ..models import ACTIVE_INSTANCE_STATUSES, TaskStatus, WorkflowInstance, WorkflowStatus
from ..permissions import (
    can_manage_instance,
    can_view_instance,
    is_active_user,
    visible_instances,
)
from ._common import (
    TEMPLATE_DIR,
    Report,
    instance_link,
    lookup,
    pretty_json,
    short_id,
    status_badge,
)
from .columns import short_datetime
from .comments import InstanceCommentMixin, comments_context
from .diagram import render_svg, step_states, taken_edges
from .export import InstanceExportMixin
from .forms import CancelForm, RetryForm
from .history import annotate_history
from .listing import BoundedListMixin, DefinitionFilter
from .migrate import MigrateActionMixin
from .signals import signals_context
from .subflows import SUBFLOW_FIELDS, SubWorkflowLinksMixin
from .substitutes import mark_on_behalf

#: States an instance can be canceled from (the engine refuses the others).
CANCELABLE = (*ACTIVE_INSTANCE_STATUSES, WorkflowStatus.FAILED)
#: Events shown on the detail page; older ones are summed up.
EVENT_LIMIT = 500


def _graph_steps(instances: Iterable[WorkflowInstance]) -> list[str]:
    """Step names of the instances' definitions, in declaration order, without repeats."""
    names: dict[str, None] = {}
    for instance in instances:
        names.update(dict.fromkeys(instance.definition.graph.get("steps") or {}))
    return list(names)


#: The instance page's fields: a summary, and the error of a failed instance.
SUMMARY_FIELDS = (
    "id",
    "definition_link",
    "status_display",
    "business_key",
    "started_by",
    "started_at",
    "updated_at",
    "finished_at",
    "current_steps_display",
)
ERROR_FIELDS = ("failed_step", "error", "traceback_display")


@admin.register(WorkflowInstance)
class WorkflowInstanceAdmin(
    BoundedListMixin,
    MigrateActionMixin,
    InstanceCommentMixin,
    SubWorkflowLinksMixin,
    InstanceExportMixin,
    admin.ModelAdmin,
):
    list_display = (
        "short_id",
        "definition_display",
        "status_display",
        "current_steps_display",
        "business_key",
        "started_by",
        "started_display",
        "updated_display",
    )
    list_display_links = ("short_id",)
    list_filter = (
        "status",
        ("definition", DefinitionFilter),
        ("started_at", admin.DateFieldListFilter),
    )
    list_select_related = ("definition", "started_by")
    list_per_page = 50
    # The changelist counts the filtered rows up to a bound (listing.BoundedListMixin);
    # not a second time for "(N total)".
    ordering = ("-started_at",)
    sortable_by = ("status_display", "started_display", "updated_display")
    search_fields = ("id", "business_key")
    search_help_text = gettext_lazy(
        "An instance id (whole, or its first characters) or a business key (or its start)."
    )
    actions = ("cancel_instances", "retry_instances", "migrate_instances")
    list_deferred = ("context", "tokens", "error", "error_traceback")
    readonly_fields = (*SUMMARY_FIELDS, *ERROR_FIELDS, *SUBFLOW_FIELDS)

    # -- permissions: the rule of ``permissions.py``, read-only, plus cancel and retry --
    # The list shows the instances the user may see (``visible_instances``); an
    # instance page the user may not see is a 403. Entering the admin needs is_staff.

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # state changes only through the engine: cancel and retry

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The list: anyone (it shows what they may see); an instance: ``can_view_instance``."""
        if obj is None:
            return is_active_user(request.user)
        return can_view_instance(request.user, obj)

    def has_cancel_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """``can_manage_instance``: ``change_workflowinstance``, or the instance's starter."""
        return can_manage_instance(request.user, obj)

    def has_retry_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """``can_manage_instance``: ``change_workflowinstance``, or the instance's starter."""
        return can_manage_instance(request.user, obj)

    # -- list -------------------------------------------------------------------

    def _all_rows(self, request: HttpRequest) -> QuerySet[WorkflowInstance]:
        return super().get_queryset(request).select_related("definition", "started_by")

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowInstance]:
        # The list never shows the definition's graph: not decoded on every row.
        rows = self._all_rows(request).defer("definition__graph", "definition__description")
        return visible_instances(request.user, rows)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> WorkflowInstance | None:
        # Among all rows: one the user may not see is refused (403), not "deleted".
        return lookup(self._all_rows(request), object_id, from_field)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WorkflowInstance], search_term: str
    ) -> tuple[QuerySet[WorkflowInstance], bool]:
        """An id (whole or its start) or a business key (whole or its start); indexed lookups."""
        term = search_term.strip()
        if not term:
            return queryset, False
        found = Q(business_key=term) | Q(business_key__startswith=term)
        try:
            found |= Q(pk=uuid.UUID(term))
        except ValueError:
            hex_digits = term.replace("-", "")
            if 4 <= len(hex_digits) < 32 and all(c in "0123456789abcdefABCDEF" for c in hex_digits):
                found |= Q(id__startswith=term.lower())
        return queryset.filter(found), False

    @admin.display(description=gettext_lazy("instance"))
    def short_id(self, obj: WorkflowInstance) -> SafeString:
        pk = escape(str(obj.pk))  # on every row of the list: no format_html
        return mark_safe(f'<span title="{pk}">{escape(short_id(obj.pk))}</span>')  # noqa: S308

    @admin.display(description=gettext_lazy("definition"), ordering="definition__name")
    def definition_display(self, obj: WorkflowInstance) -> str:
        return f"{obj.definition.name} {obj.definition.version}"

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_display(self, obj: WorkflowInstance) -> SafeString:
        return status_badge(obj)

    @admin.display(description=gettext_lazy("current step"))
    def current_steps_display(self, obj: WorkflowInstance) -> str:
        return ", ".join(obj.current_steps) or "-"

    # Compact dates (they wrap): every column fits 1280 px with the nav sidebar open.
    @admin.display(description=gettext_lazy("started"), ordering="started_at")
    def started_display(self, obj: WorkflowInstance) -> SafeString:
        return short_datetime(obj.started_at)

    @admin.display(description=gettext_lazy("updated"), ordering="updated_at")
    def updated_display(self, obj: WorkflowInstance) -> SafeString:
        return short_datetime(obj.updated_at)

    # -- detail -----------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        fieldsets: list[Any] = [(None, {"fields": SUMMARY_FIELDS}), *self.subflow_fieldset(obj)]
        if obj is not None and (obj.error or obj.status == WorkflowStatus.FAILED):
            fieldsets.append((_("Error"), {"fields": ERROR_FIELDS}))
        return fieldsets

    @admin.display(description=gettext_lazy("definition"))
    def definition_link(self, obj: WorkflowInstance) -> SafeString:
        url = reverse("admin:django_workflows_definitionversion_change", args=[obj.definition_id])
        return format_html('<a href="{}">{}</a>', url, obj.definition)

    @admin.display(description=gettext_lazy("error traceback"))
    def traceback_display(self, obj: WorkflowInstance) -> SafeString:
        if not obj.error_traceback:
            return mark_safe("-")
        return format_html(
            '<details><summary>{}</summary><pre class="dwf-pre">{}</pre></details>',
            _("Show the traceback"),
            obj.error_traceback,
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(self._detail_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _detail_context(self, request: HttpRequest, obj: WorkflowInstance) -> dict[str, Any]:
        runs = list(obj.step_runs.order_by("id"))
        events = list(obj.events.order_by("-id")[: EVENT_LIMIT + 1])[::-1]
        hidden_events = 0
        if len(events) > EVENT_LIMIT:
            hidden_events = obj.events.count() - EVENT_LIMIT
            events = events[1:]
        tasks = list(
            obj.human_tasks.filter(status=TaskStatus.OPEN)
            .select_related("assignee", "claimed_by")
            .prefetch_related("candidate_groups")
            .order_by("created_at", "pk")
        )
        graph = obj.definition.graph or {}
        states = step_states(
            ((run.step_name, run.status) for run in runs),
            current_steps=obj.current_steps,
            failed_step=obj.failed_step if obj.status == WorkflowStatus.FAILED else "",
        )
        taken = taken_edges(
            ((run.pk, run.step_name, run.status) for run in runs),
            ((edge.get("source"), edge.get("target")) for edge in graph.get("edges") or []),
        )
        annotate_history(events)  # user names for user ids, one query for the page
        mark_on_behalf(events)
        return {
            "graph_svg": render_svg(graph, states, taken, id_prefix=f"instance-{obj.pk}"),
            "step_runs": runs,
            "events": events,
            "hidden_events": hidden_events,
            "open_tasks": tasks,
            "context_json": pretty_json(obj.context),
            "can_cancel": obj.status in CANCELABLE and self.has_cancel_permission(request, obj),
            "can_retry": obj.status == WorkflowStatus.FAILED
            and self.has_retry_permission(request, obj),
            "cancel_url": reverse("admin:django_workflows_workflowinstance_cancel", args=[obj.pk]),
            "retry_url": reverse("admin:django_workflows_workflowinstance_retry", args=[obj.pk]),
            "export_url": reverse("admin:django_workflows_workflowinstance_export", args=[obj.pk]),
            **comments_context(request, obj),
            **signals_context(obj),
        }

    # -- cancel and retry: pages and actions ---------------------------------------

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="{}_{}_cancel".format(*info),
            ),
            path(
                "<path:object_id>/comment/",
                self.admin_site.admin_view(self.comment_view),
                name="{}_{}_comment".format(*info),
            ),
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="{}_{}_retry".format(*info),
            ),
            *super().get_urls(),
        ]

    def _change_url(self, obj: WorkflowInstance) -> str:
        return reverse("admin:django_workflows_workflowinstance_change", args=[obj.pk])

    def _instance_or_redirect(
        self, request: HttpRequest, object_id: str, permission: str
    ) -> WorkflowInstance | HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not getattr(self, f"has_{permission}_permission")(request, obj):
            raise PermissionDenied
        return obj

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Cancel one instance; a first page asks for the reason."""
        obj = self._instance_or_redirect(request, object_id, "cancel")
        if isinstance(obj, HttpResponse):
            return obj
        if obj.status not in CANCELABLE:
            self.message_user(
                request,
                _("%(instance)s is already %(status)s: there is nothing to cancel.")
                % {"instance": obj, "status": obj.get_status_display().lower()},
                messages.WARNING,
            )
            return HttpResponseRedirect(self._change_url(obj))
        form = CancelForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            self._cancel(request, [obj], form.cleaned_data["reason"])
            return HttpResponseRedirect(self._change_url(obj))
        return self._confirmation(request, "cancel", [obj], form)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Retry one failed instance from its failed step or a chosen one."""
        obj = self._instance_or_redirect(request, object_id, "retry")
        if isinstance(obj, HttpResponse):
            return obj
        if obj.status != WorkflowStatus.FAILED:
            self.message_user(
                request,
                _("%(instance)s is %(status)s: only a failed instance is retried.")
                % {"instance": obj, "status": obj.get_status_display().lower()},
                messages.WARNING,
            )
            return HttpResponseRedirect(self._change_url(obj))
        form = RetryForm(
            request.POST if request.method == "POST" else None,
            steps=_graph_steps([obj]),
            failed_step=obj.failed_step,
        )
        if form.is_valid():
            self._retry(request, [obj], form.cleaned_data["from_step"] or None)
            return HttpResponseRedirect(self._change_url(obj))
        return self._confirmation(request, "retry", [obj], form)

    @admin.action(
        description=gettext_lazy("Cancel selected workflow instances…"), permissions=["cancel"]
    )
    def cancel_instances(
        self, request: HttpRequest, queryset: QuerySet[WorkflowInstance]
    ) -> HttpResponse | None:
        selected = list(queryset)
        if not any(obj.status in CANCELABLE for obj in selected):
            self._cancel(request, selected, "")  # reports each one as skipped
            return None
        confirmed = request.POST.get("post") == "yes"
        form = CancelForm(request.POST if confirmed else None)
        if form.is_valid():
            self._cancel(request, selected, form.cleaned_data["reason"])
            return None
        return self._confirmation(request, "cancel", selected, form, action="cancel_instances")

    @admin.action(
        description=gettext_lazy("Retry selected failed workflow instances…"),
        permissions=["retry"],
    )
    def retry_instances(
        self, request: HttpRequest, queryset: QuerySet[WorkflowInstance]
    ) -> HttpResponse | None:
        selected = list(queryset)
        failed = [obj for obj in selected if obj.status == WorkflowStatus.FAILED]
        if not failed:
            self._retry(request, selected, None)  # reports each one as skipped
            return None
        confirmed = request.POST.get("post") == "yes"
        form = RetryForm(request.POST if confirmed else None, steps=_graph_steps(failed))
        if form.is_valid():
            self._retry(request, selected, form.cleaned_data["from_step"] or None)
            return None
        return self._confirmation(request, "retry", selected, form, action="retry_instances")

    def _confirmation(
        self,
        request: HttpRequest,
        operation: str,
        instances: list[WorkflowInstance],
        form: Any,
        *,
        action: str | None = None,
    ) -> TemplateResponse:
        valid = CANCELABLE if operation == "cancel" else (WorkflowStatus.FAILED,)
        ready = [obj for obj in instances if obj.status in valid]
        skipped = [obj for obj in instances if obj.status not in valid]
        single = instances[0] if action is None else None
        context = {
            **self.admin_site.each_context(request),
            "title": {
                ("cancel", True): _("Cancel the workflow instance"),
                ("cancel", False): _("Cancel workflow instances"),
                ("retry", True): _("Retry the workflow instance"),
                ("retry", False): _("Retry workflow instances"),
            }[operation, single is not None],
            "opts": self.opts,
            "operation": operation,
            "form": form,
            "action": action,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "original": single,
            "instances": instances,
            "ready": ready,
            "skipped": skipped,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, f"{TEMPLATE_DIR}/workflowinstance/{operation}.html", context
        )

    def _cancel(self, request: HttpRequest, instances: Iterable[WorkflowInstance], reason: str):
        report = Report(self, request)
        engine = get_engine()
        for obj in instances:
            link = instance_link(obj)
            if obj.status not in CANCELABLE:
                report.add(
                    messages.WARNING,
                    format_html(
                        _("{} was not canceled: it is already {}."),
                        link,
                        obj.get_status_display().lower(),
                    ),
                )
                continue
            try:
                engine.cancel_workflow(obj.pk, reason=reason)
            except WorkflowError as exc:  # a state conflict: it finished meanwhile
                report.add(
                    messages.WARNING, format_html(_("{} was not canceled: {}"), link, str(exc))
                )
                continue
            self.log_change(request, obj, _("Canceled: %(reason)s") % {"reason": reason})
            report.add(messages.SUCCESS, format_html(_("{} was canceled."), link))
        report.send()

    def _retry(
        self, request: HttpRequest, instances: Iterable[WorkflowInstance], from_step: str | None
    ) -> None:
        report = Report(self, request)
        engine = get_engine()
        for obj in instances:
            link = instance_link(obj)
            if obj.status != WorkflowStatus.FAILED:
                report.add(
                    messages.WARNING,
                    format_html(
                        _("{} was not retried: it is {}, only a failed instance is retried."),
                        link,
                        obj.get_status_display().lower(),
                    ),
                )
                continue
            step = from_step or obj.failed_step
            try:
                result = engine.retry(obj.pk, from_step=from_step)
            except WorkflowError as exc:  # no such step, not registered, or a conflict
                report.add(
                    messages.WARNING, format_html(_("{} was not retried: {}"), link, str(exc))
                )
                continue
            self.log_change(request, obj, _("Retried from step %(step)s") % {"step": step})
            if result.status == WorkflowStatus.FAILED:
                report.add(
                    messages.ERROR,
                    format_html(
                        _("{} was retried from step {} and failed again at step {}: {}"),
                        link,
                        step,
                        result.failed_step,
                        result.error,
                    ),
                )
            else:
                report.add(
                    messages.SUCCESS,
                    format_html(
                        _("{} was retried from step {}; it is now {}."),
                        link,
                        step,
                        result.get_status_display().lower(),
                    ),
                )
        report.send()
