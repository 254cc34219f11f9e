"""What the admin pages share: badges, JSON, links, per-object reports, the 403 page."""

from __future__ import annotations

from functools import lru_cache
from html import escape
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from ..links import pk_url
from ..models import WorkflowInstance

# Shared with the app's own pages: there since they are shown there too.
from ..taskpage import compact_json, instance_label, pretty_json, safe_next, short_id

__all__ = [
    "TEMPLATE_DIR",
    "Report",
    "badge",
    "compact_json",
    "forbidden",
    "instance_label",
    "instance_link",
    "lookup",
    "pretty_json",
    "safe_next",
    "short_id",
    "status_badge",
]

TEMPLATE_DIR = "admin/django_workflows"


def badge(value: str, label: Any) -> SafeString:
    """A colored status label; the CSS is in ``includes/styles.html``."""
    return format_html('<span class="dwf-badge dwf-badge-{}">{}</span>', value, label)


@lru_cache(maxsize=512)
def _status_badge(model: type[Model], field: str, value: Any, language: str | None) -> SafeString:
    label = dict(model._meta.get_field(field).flatchoices).get(value, value)
    return badge(value, label)


def status_badge(obj: Model, field: str = "status") -> SafeString:
    """``badge(value, get_FIELD_display())`` of a choice field, built once per value and
    language: a list shows the same few statuses on every row."""
    return _status_badge(type(obj), field, getattr(obj, field), get_language())


def instance_link(instance: WorkflowInstance, *, linked: bool = True) -> SafeString:
    label = escape(instance_label(instance))  # a list shows it on every row: no format_html
    if not linked:
        return mark_safe(label)  # noqa: S308 (escaped)
    url = escape(pk_url("admin:django_workflows_workflowinstance_change", instance.pk))
    return mark_safe(f'<a href="{url}">{label}</a>')  # noqa: S308 (escaped)


def lookup(rows: QuerySet, object_id: str, from_field: str | None = None) -> Model | None:
    """``ModelAdmin.get_object`` on ``rows``: the row, or None for an unknown or bad id."""
    model = rows.model
    field = model._meta.pk if from_field is None else model._meta.get_field(from_field)
    try:
        return rows.get(**{field.name: field.to_python(object_id)})
    except (model.DoesNotExist, ValidationError, ValueError):
        return None


def forbidden(request: HttpRequest, admin_site: Any, message: str) -> TemplateResponse:
    """A 403 page inside the admin that says why."""
    context = {
        **admin_site.each_context(request),
        "title": _("Not allowed"),
        "message": message,
    }
    return TemplateResponse(request, f"{TEMPLATE_DIR}/forbidden.html", context, status=403)


class Report:
    """Per-object outcomes of an action, sent as admin messages.

    Every object gets its own line, up to ``limit`` lines; the rest is summed up in
    one more line, so that acting on thousands of rows does not flood the session.
    """

    limit = 20

    def __init__(self, model_admin: Any, request: HttpRequest) -> None:
        self.model_admin = model_admin
        self.request = request
        self.lines: list[tuple[int, SafeString]] = []
        self.counts = {messages.SUCCESS: 0, messages.WARNING: 0, messages.ERROR: 0}

    def add(self, level: int, text: SafeString) -> None:
        self.lines.append((level, text))
        self.counts[level] = self.counts.get(level, 0) + 1

    def send(self) -> None:
        for level, text in self.lines[: self.limit]:
            self.model_admin.message_user(self.request, text, level)
        rest = self.lines[self.limit :]
        if rest:
            done = sum(1 for level, _text in rest if level == messages.SUCCESS)
            self.model_admin.message_user(
                self.request,
                _("… and %(count)d more: %(done)d done, %(other)d skipped or failed.")
                % {"count": len(rest), "done": done, "other": len(rest) - done},
                messages.INFO,
            )


class OnePageAdmin(admin.ModelAdmin):
    """The admin of a proxy model that is one page, its row in the app list: nothing to
    add, change or delete; its changelist URL serves ``page_view`` (a method name)."""

    page_view = ""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view(getattr(self, self.page_view))
        return [path("", view, name="{}_{}_changelist".format(*info))]
