"""The rows of our changelists: Django's markup (``items_for_result``), built cheaper.

Django's ``{% result_list %}`` looks every cell up by its column name
(``lookup_field``: for a ``ModelAdmin`` method, a ``get_field()`` that raises first),
then wraps it with ``format_html``, and the results template loops over the cells:
about 0.7 ms a row, half of a list page. Here each column is looked up once per page
and a row is one string of cells; the template (Django's ``change_list_results.html``,
headers included) gets one item per row. The cells are Django's, cell for cell
(tests/admin/test_results.py compares them); a column of another kind, a popup or an
editable list goes through Django's own ``items_for_result``.

``{% dwf_result_list cl %}`` (``templatetags/dwf_admin_list.py``) is used by the
changelist templates of instances and tasks. Before the rows are shown, a ``ModelAdmin``
may prepare them in one go (``prepare_rows(rows)``: the task list's candidate groups).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from django.contrib.admin.templatetags.admin_list import (
    ResultList,
    _coerce_field_name,
    result_headers,
    result_hidden_fields,
    results,
)
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import (
    FieldIsAForeignKeyColumnName,
    _get_non_gfk_field,
    display_for_field,
    display_for_value,
    lookup_field,
)
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.urls import NoReverseMatch
from django.utils.html import conditional_escape, escape
from django.utils.safestring import SafeString, mark_safe

_DATES = (datetime.date, datetime.time)


class _Column:
    """One column of ``list_display``, looked up once: how to get and show its cells."""

    def __init__(self, cl: Any, index: int, name: Any, link: bool, tag: str) -> None:
        admin = cl.model_admin
        self.name, self.link, self.tag = name, link, tag
        self.classes = f"field-{_coerce_field_name(name, index)}"
        self.empty = admin.get_empty_value_display()
        self.field: Any = None
        self.method: Callable[[Any], Any] | None = None
        self.boolean = False
        try:
            field = _get_non_gfk_field(cl.lookup_opts, name)
        except (FieldDoesNotExist, FieldIsAForeignKeyColumnName):
            # lookup_field's second case: a ModelAdmin attribute, called with the row.
            if not callable(name) and name != "__str__" and hasattr(admin, name):
                self.method = getattr(admin, name)
                self.empty = getattr(self.method, "empty_value_display", self.empty)
                self.boolean = getattr(self.method, "boolean", False)
                if name == "action_checkbox":
                    self.classes = "action-checkbox"
        else:
            self.field = field
            dated = isinstance(field, models.DateField | models.TimeField | models.ForeignKey)
            if dated and not field.auto_created:
                self.classes += " nowrap"

    @property
    def known(self) -> bool:
        """Whether this module shows the column (else Django's ``items_for_result``)."""
        return self.method is not None or self.field is not None

    def shown(self, row: Any) -> Any:
        """The cell's content, as ``items_for_result`` shows it; and whether it is a date."""
        field = self.field
        if self.method is not None:
            value = self.method(row)
            if value.__class__ is SafeString and not self.boolean and value.strip():
                return value, False  # what display_for_value and escaping leave as it is
        elif field.auto_created:
            value = getattr(row, self.name)
        else:
            value = getattr(row, self.name)
            if isinstance(value, str) and value.strip() == "":
                value = ""
            if isinstance(field.remote_field, models.ManyToOneRel):
                related = getattr(row, field.name)
                return (self.empty if related is None else related), False
            return display_for_field(value, field, self.empty, avoid_link=self.link), False
        if isinstance(value, str) and value.strip() == "":
            value = ""
        return display_for_value(value, self.empty, self.boolean), isinstance(value, _DATES)


def _columns(cl: Any) -> list[_Column] | None:
    """The page's columns, or None if one is not of a kind this module shows."""
    links = cl.list_display_links
    first = True
    columns = []
    for index, name in enumerate(cl.list_display):
        link = links is not None and ((first and not links) or name in links)
        tag = "th" if link and first else "td"
        first = first and not link
        column = _Column(cl, index, name, link, tag)
        if not column.known:
            return None
        columns.append(column)
    return columns


class _Links:
    """The rows' change links with the page's filters (``add_preserved_filters``), which
    resolves each URL: the links are URLs of one view without a query
    (``url_for_result``), so what it adds to the first one it adds to every one."""

    def __init__(self, cl: Any) -> None:
        self.cl = cl
        self.context = {"preserved_filters": cl.preserved_filters, "opts": cl.opts}
        self.suffix: str | None = None

    def url(self, row: Any) -> str:
        url = self.cl.url_for_result(row)
        if self.suffix is not None:
            return url + self.suffix
        full = add_preserved_filters(self.context, url)
        if full.startswith(url) and not any(c in url for c in "?#;"):
            self.suffix = full[len(url) :]
        return full


def _cell(column: _Column, row: Any, links: _Links) -> str:
    try:
        content, is_date = column.shown(row)
    except ObjectDoesNotExist:
        content, is_date = column.empty, False
    text = conditional_escape(content)
    if column.link:
        try:
            url = links.url(row)
        except NoReverseMatch:
            pass
        else:
            text = f'<a href="{escape(url)}">{text}</a>'
    classes = column.classes + " nowrap" if is_date else column.classes
    return f'<{column.tag} class="{classes}">{text}</{column.tag}>'


def fast_results(cl: Any) -> list[ResultList]:
    """Django's ``results(cl)``, one item (all its cells) per row (module doc)."""
    prepare = getattr(cl.model_admin, "prepare_rows", None)
    if prepare is not None:
        prepare(list(cl.result_list))
    columns = None if getattr(cl, "formset", None) or cl.is_popup else _columns(cl)
    if columns is None:
        return list(results(cl))
    links = _Links(cl)
    return [
        ResultList(None, [mark_safe("".join([_cell(c, row, links) for c in columns]))])  # noqa: S308
        for row in cl.result_list
    ]


def result_list(cl: Any) -> dict[str, Any]:
    """Django's ``result_list`` (the context of ``change_list_results.html``), its rows
    from ``fast_results``."""
    headers = list(result_headers(cl))
    return {
        "cl": cl,
        "result_hidden_fields": list(result_hidden_fields(cl)),
        "result_headers": headers,
        "num_sorted_fields": sum(1 for h in headers if h["sortable"] and h["sorted"]),
        "results": fast_results(cl),
    }


def row_html(cells: Any) -> SafeString:
    """A row of Django's ``items_for_result`` as one string (for comparing rows)."""
    return mark_safe("".join(str(cell) for cell in cells))  # noqa: S308


__all__ = ["fast_results", "lookup_field", "result_list", "row_html"]
