"""The instance page's links between a sub-workflow and its parent."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..models import WorkflowInstance

#: Shown on an instance that has a parent or children.
SUBFLOW_FIELDS = ("parent_link", "children_links")

#: The instance page lists this many children; a link leads to the list of all of them
#: (a for_each over a long list starts one child per item).
CHILDREN_SHOWN = 50


def _url(pk: Any) -> str:
    return reverse("admin:django_workflows_workflowinstance_change", args=[pk])


class SubWorkflowLinksMixin:
    """``parent_link`` and ``children_links``, and their fieldset."""

    def subflow_fieldset(self, obj: WorkflowInstance | None) -> list[Any]:
        if obj is None or (obj.parent_id is None and not obj.children.exists()):
            return []
        return [(_("Sub-workflows"), {"fields": SUBFLOW_FIELDS})]

    @admin.display(description=gettext_lazy("parent instance"))
    def parent_link(self, obj: WorkflowInstance) -> SafeString:
        if obj.parent_id is None:
            return mark_safe("-")
        run = obj.parent_step_run
        step = f" ({_('step')} {run.step_name})" if run is not None else ""
        return format_html(
            '<a href="{}" class="dwf-parent">{}</a>{}', _url(obj.parent_id), obj.parent, step
        )

    @admin.display(description=gettext_lazy("sub-workflows"))
    def children_links(self, obj: WorkflowInstance) -> SafeString:
        children = list(
            obj.children.select_related("definition", "parent_step_run").order_by(
                "started_at", "parent_item"
            )[: CHILDREN_SHOWN + 1]
        )
        if not children:
            return mark_safe("-")
        more = mark_safe("")
        if len(children) > CHILDREN_SHOWN:
            children = children[:CHILDREN_SHOWN]
            url = reverse("admin:django_workflows_workflowinstance_changelist")
            more = format_html(
                '<li><a href="{}?parent__id__exact={}" class="dwf-all-children">{}</a></li>',
                url,
                obj.pk,
                _("All %(count)s sub-workflows") % {"count": obj.children.count()},
            )
        rows = format_html_join(
            "",
            '<li><a href="{}" class="dwf-child">{}</a> {} ({} {}, {} {})</li>',
            (
                (
                    _url(c.pk),
                    c,
                    c.get_status_display(),
                    _("step"),
                    c.parent_step_run.step_name if c.parent_step_run else "-",
                    _("item"),
                    c.parent_item,
                )
                for c in children
            ),
        )
        return format_html('<ul class="dwf-children">{}{}</ul>', rows, more)
