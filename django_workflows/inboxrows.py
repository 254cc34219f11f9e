"""The rows of "My tasks" (``includes/inbox_table.html``), rendered in Python.

A row in template language resolved some 35 variables and tags, about 0.6 ms a row and
half of the page's time; here a row is one format string filled with escaped values
(the same markup: tests/admin/test_inbox_rows.py compares it with the template's).

The candidate groups of a page come from one query of their names
(``attach_group_names``), not from ``prefetch_related``: a prefetched reverse relation
ties each task and its groups into a reference cycle, which only Python's cyclic
collector frees, so a page's tasks lived on as garbage after the response.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import template_localtime  # type: ignore[attr-defined]
from django.utils.translation import gettext as _

from .links import pk_url
from .models import HumanTask
from .paging import candidate_group_names

#: The group names of a task, set by ``attach_group_names``.
GROUP_NAMES = "dwf_group_names"

_ROW = (
    '<tr class="dwf-task{overdue}" data-task="{pk}">\n'
    "{select}"
    '<td><a href="{task_url}">{title}</a></td>\n'
    '<td class="dwf-summary">{summary}</td>\n'
    "<td>{instance}{business_key}</td>\n"
    "<td>{step}</td>\n"
    "<td>{holder}</td>\n"
    "<td>{created}</td>\n"
    "<td>{due}</td>\n"
    "<td>{action}</td>\n"
    "</tr>\n"
)
_SELECT = (
    '<td class="dwf-select"><input type="checkbox" name="task" value="{pk}"'
    ' form="dwf-bulk-select" aria-label="{select} {title}"></td>\n'
)
_FORM = (
    '<form method="post" action="{url}" class="dwf-inline-form">{csrf}'
    '<input type="hidden" name="next" value="{next}">'
    '<button type="submit" class="button">{label}</button></form>'
)


def attach_group_names(tasks: Iterable[HumanTask]) -> None:
    """Set each task's candidate group names (``GROUP_NAMES``), in name order: one query."""
    tasks = list(tasks)
    names = candidate_group_names([task.pk for task in tasks])
    for task in tasks:
        setattr(task, GROUP_NAMES, names[task.pk])


def group_names(task: HumanTask) -> list[str]:
    names = getattr(task, GROUP_NAMES, None)
    if names is None:
        return [group.name for group in task.candidate_groups.all()]
    return names


def _when(value: Any) -> str:
    """The template's ``{{ value|date:"Y-m-d H:i" }}``."""
    local = template_localtime(value)
    return f"{local.year:04d}-{local:%m-%d %H:%M}"


def _holder(task: HumanTask) -> str:
    """Who the task is for: who claimed it, its assignee, or its groups."""
    if task.claimed_by_id is not None:
        return _("claimed by %(user)s") % {"user": escape(task.claimed_by)}
    if task.assignee_id is not None:
        return escape(task.assignee)
    return escape(", ".join(group_names(task))) or "-"


def render_rows(
    tasks: Iterable[HumanTask],
    urls: Mapping[str, str],
    *,
    user: Any,
    next_url: str,
    csrf_token: Any,
    current_app: str | None,
) -> SafeString:
    """The ``<tr>`` of each task, as ``inbox_table.html`` shows them (its ``urls``)."""
    csrf = ""
    if csrf_token and csrf_token != "NOTPROVIDED":  # noqa: S105 (Django's "no token")
        csrf = f'<input type="hidden" name="csrfmiddlewaretoken" value="{escape(csrf_token)}">'
    next_value = escape(next_url)
    select_label = escape(_("Select"))
    overdue_badge = f' <span class="dwf-badge dwf-badge-overdue">{escape(_("overdue"))}</span>'
    claim, unclaim = escape(_("Claim")), escape(_("Unclaim"))
    may_unclaim_any = bool(getattr(user, "is_superuser", False))
    user_pk = getattr(user, "pk", None)
    bulk, instance_name = urls.get("bulk"), urls.get("instance")
    rows = []
    for task in tasks:
        pk = escape(task.pk)
        title = escape(task.title)
        overdue = getattr(task, "overdue", False)
        definition = task.instance.definition
        label: str = escape(f"{definition.name} {definition.version} #{str(task.instance_id)[:8]}")
        if instance_name:
            url = pk_url(instance_name, task.instance_id, current_app)
            label = f'<a href="{escape(url)}">{label}</a>'
        key = task.instance.business_key
        due = "-"
        if task.due_at:
            due = _when(task.due_at) + (overdue_badge if overdue else "")
        action = ""
        if task.claimed_by_id is None:
            action = _form(urls["claim"], task.pk, current_app, csrf, next_value, claim)
        elif task.claimed_by_id == user_pk or may_unclaim_any:
            action = _form(urls["unclaim"], task.pk, current_app, csrf, next_value, unclaim)
        rows.append(
            _ROW.format(
                overdue=" dwf-overdue" if overdue else "",
                pk=pk,
                select=_SELECT.format(pk=pk, select=select_label, title=title) if bulk else "",
                task_url=escape(pk_url(urls["task"], task.pk, current_app)),
                title=title,
                summary=escape(task.summary or "-"),
                instance=label,
                business_key=f'<div class="dwf-muted">{escape(key)}</div>' if key else "",
                step=escape(task.step_name),
                holder=_holder(task),
                created=_when(task.created_at),
                due=due,
                action=action,
            )
        )
    return mark_safe("".join(rows))  # noqa: S308 (every value above is escaped)


def _form(
    name: str, pk: Any, current_app: str | None, csrf: str, next_value: str, label: str
) -> str:
    url = escape(pk_url(name, pk, current_app))
    return _FORM.format(url=url, csrf=csrf, next=next_value, label=label)
