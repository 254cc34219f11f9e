"""Stored definition versions: read-only, with their graph and their instances by status."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy

from ..models import DefinitionVersion, WorkflowStatus
from ._common import badge
from .columns import short_datetime
from .diagram import render_svg


def _count_name(status: str) -> str:
    return f"instances_{status}"


@admin.register(DefinitionVersion)
class DefinitionVersionAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "version",
        "instance_total",
        "instances_by_status",
        "created_display",
        "graph_thumbnail",
    )
    list_display_links = ("name", "version")
    list_filter = ("name",)
    search_fields = ("name",)
    ordering = ("name", "version")
    sortable_by = ("name", "version", "instance_total", "created_display")
    show_full_result_count = False
    fields = (
        "name",
        "version",
        "description",
        "checksum",
        "created_at",
        "instance_total",
        "instances_by_status",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a stored graph is immutable; the engine writes the rows

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[DefinitionVersion]:
        """Each row with its instance counts by status: one query, whatever the rows."""
        counts = {
            _count_name(status): Count("instances", filter=Q(instances__status=status))
            for status in WorkflowStatus.values
        }
        return super().get_queryset(request).annotate(instance_count=Count("instances"), **counts)

    def _instances_url(self, obj: DefinitionVersion, status: str | None = None) -> str:
        query = {"definition__id__exact": obj.pk}
        if status:
            query["status__exact"] = status
        return (
            reverse("admin:django_workflows_workflowinstance_changelist") + "?" + urlencode(query)
        )

    @admin.display(description=gettext_lazy("instances"), ordering="instance_count")
    def instance_total(self, obj: DefinitionVersion) -> SafeString:
        total = getattr(obj, "instance_count", 0)
        if not total:
            return format_html("0")
        return format_html('<a href="{}">{}</a>', self._instances_url(obj), total)

    @admin.display(description=gettext_lazy("by status"))
    def instances_by_status(self, obj: DefinitionVersion) -> SafeString:
        parts = [
            (self._instances_url(obj, status), badge(status, label), count)
            for status, label in WorkflowStatus.choices
            if (count := getattr(obj, _count_name(status), 0))
        ]
        if not parts:
            return mark_safe("-")
        return format_html(
            '<span class="dwf-counts">{}</span>',
            format_html_join(" ", '<a href="{}">{} {}</a>', parts),
        )

    @admin.display(description=gettext_lazy("created"), ordering="created_at")
    def created_display(self, obj: DefinitionVersion) -> SafeString:
        return short_datetime(obj.created_at)

    @admin.display(description=gettext_lazy("graph"))
    def graph_thumbnail(self, obj: DefinitionVersion) -> SafeString:
        svg = render_svg(obj.graph or {}, legend=False, id_prefix=f"definition-{obj.pk}-thumb")
        return format_html('<div class="dwf-thumbnail">{}</div>', svg)

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
            context["graph_svg"] = render_svg(obj.graph or {}, id_prefix=f"definition-{obj.pk}")
            context["steps"] = [
                {"name": name, **(spec if isinstance(spec, dict) else {})}
                for name, spec in (obj.graph.get("steps") or {}).items()
            ]
            context["edges"] = obj.graph.get("edges") or []
        return super().render_change_form(request, context, add, change, form_url, obj)
