"""The admin's long lists (instances, tasks): a page costs the same at a thousand rows as
at ten million.

Two things grew with the table or with the rows of a page (docs/performance.md, "List
pages at scale"):

- **The count.** Django's changelist counts every row that matches (``COUNT(*)``) on
  every page: about 10 ms per 100,000 rows on PostgreSQL, a second at 10 million. Here
  the paginator is ``paging.BoundedPaginator``: exact up to 1,000 rows past the page
  asked for, "more than N" beyond (the page links reach N; the last one links further).
  A filter that leaves a few rows still shows their exact number.
- **The rows.** The checkbox of each row went through the form renderer's templates, and
  each row's link through ``reverse()``. Here the checkbox is one ``format_html`` and the
  change links come from one ``reverse()`` per process (``links.pk_url``).
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from typing import Any

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from ..links import pk_url
from ..paging import BoundedPaginator
from .release import releasing


class BoundedChangeList(ChangeList):
    """Django's changelist with ``links.pk_url`` for each row's link, and without the
    fields the rows do not show (``list_deferred``)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        deferred = getattr(self.model_admin, "list_deferred", ())
        if deferred:  # the rows shown; not the actions' querysets, which may read them
            self.result_list = self.result_list.defer(*deferred)

    def url_for_result(self, result: Model) -> str:
        name = f"admin:{self.opts.app_label}_{self.opts.model_name}_change"
        return pk_url(name, getattr(result, self.pk_attname), self.model_admin.admin_site.name)


class BoundedListMixin:
    """A ``ModelAdmin`` mixin: bounded count, light checkboxes and links (module doc).

    The templates ``admin/django_workflows/pagination.html`` and ``actions.html`` say
    "more than N" when the count stopped (``cl.paginator.count_is_exact``); "select all"
    then acts on every matching row, as in Django.
    """

    show_full_result_count = False  # a second count, of every row: never
    #: Fields the rows shown never read (large JSON and texts): not fetched nor decoded.
    list_deferred: tuple[str, ...] = ()

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: Any,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> BoundedPaginator:
        return BoundedPaginator(
            queryset, per_page, request.GET.get(PAGE_VAR), orphans, allow_empty_first_page
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BoundedChangeList

    def action_checkbox(self, obj: Model) -> SafeString:
        """Django's checkbox (``ModelAdmin.action_checkbox``), without a widget per row."""
        label = escape(_select_label().format(obj))
        return mark_safe(  # noqa: S308 (format_html's escaping, without its per-call cost)
            f'<input type="checkbox" name="{ACTION_CHECKBOX_NAME}" value="{escape(str(obj.pk))}"'
            f' class="action-select" aria-label="{label}">'
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = releasing(super().changelist_view(request, extra_context))  # type: ignore[misc]
        context = getattr(response, "context_data", None)
        cl = context.get("cl") if context else None
        if cl is not None and not getattr(cl.paginator, "count_is_exact", True):
            context["selection_note_all"] = _("All of more than %(total_count)s selected") % {
                "total_count": cl.result_count
            }
        return response


def _select_label() -> str:
    return _select_label_for(get_language())


@lru_cache(maxsize=64)
def _select_label_for(language: str | None) -> str:
    return _("Select this object for an action - {}")


class DefinitionFilter(admin.RelatedFieldListFilter):
    """The definition filter, its choices read as (id, name, version): Django's reads
    every definition's whole row, graph (JSON) included, on every page of the list."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> list:
        rows = field.related_model._default_manager.order_by("name", "version")
        return [
            (pk, f"{name} {version}")
            for pk, name, version in rows.values_list("pk", "name", "version")
        ]
