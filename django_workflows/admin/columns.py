"""Short list cells, so the admin lists fit a 1280 px window with the sidebar open:
compact dates, who a task is for in one cell, a result on one truncated line."""

from __future__ import annotations

from html import escape
from typing import Any

from django.contrib import admin
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..inboxrows import group_names
from ..models import HumanTask
from ._common import compact_json

#: A result cell shows this many characters; the whole compact JSON is its tooltip.
RESULT_CHARS = 60
TOOLTIP_CHARS = 1000


def short_datetime(value: Any) -> SafeString:
    """``2026-12-06 16:12`` (local time), which may wrap between date and time."""
    if value is None:
        return mark_safe("-")
    local = timezone.localtime(value)
    # Digits, dashes, colons, a "+" and a "T": nothing to escape.
    return mark_safe(  # noqa: S308
        f'<time datetime="{local.isoformat()}"><span class="dwf-date">{local:%Y-%m-%d}</span> '
        f'<span class="dwf-time">{local:%H:%M}</span></time>'
    )


def one_line(text: str, limit: int = RESULT_CHARS) -> SafeString:
    """``text`` on one line, cut with an ellipsis where the cell ends (CSS) or at ``limit``
    characters; the whole text in a tooltip."""
    shown = escape(text if len(text) <= limit else text[:limit] + "…")
    title = escape(text[:TOOLTIP_CHARS])  # a list shows it on every row: no format_html
    return mark_safe(f'<span class="dwf-one-line" title="{title}">{shown}</span>')  # noqa: S308


class TaskColumns:
    """The task list's short columns (mixed into ``HumanTaskAdmin``)."""

    @admin.display(description=gettext_lazy("for"))
    def for_display(self, obj: HumanTask) -> SafeString:
        """Who may complete it: who claimed it, else its assignee, else its groups."""
        if obj.claimed_by_id is not None:
            return one_line(_("claimed by %(user)s") % {"user": obj.claimed_by}, limit=40)
        if obj.assignee_id is not None:
            return one_line(str(obj.assignee), limit=40)
        groups = ", ".join(group_names(obj))
        return one_line(groups, limit=40) if groups else mark_safe("-")

    @admin.display(description=gettext_lazy("completed by"), ordering="completed_by")
    def completed_by_display(self, obj: HumanTask) -> SafeString:
        return one_line(str(obj.completed_by), limit=40) if obj.completed_by else mark_safe("-")

    @admin.display(description=gettext_lazy("result"))
    def result_short(self, obj: HumanTask) -> SafeString:
        return one_line(compact_json(obj.result)) if obj.result else mark_safe("-")
