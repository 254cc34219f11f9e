"""``{% inbox_rows tasks urls %}``: the rows of "My tasks" (``inboxrows.render_rows``),
for ``django_workflows/includes/inbox_table.html``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django import template
from django.utils.safestring import SafeString

from ..inboxrows import render_rows

register = template.Library()


@register.simple_tag(takes_context=True)
def inbox_rows(
    context: template.Context, tasks: Iterable[Any], urls: Mapping[str, str]
) -> SafeString:
    """The rows, linked in the request's current app as ``{% url %}`` links."""
    request = context.get("request")
    current_app = getattr(request, "current_app", None)
    if current_app is None:
        match = getattr(request, "resolver_match", None)
        current_app = match.namespace if match is not None else None
    return render_rows(
        tasks,
        urls,
        user=getattr(request, "user", None),
        next_url=request.get_full_path() if request is not None else "",
        csrf_token=context.get("csrf_token"),
        current_app=current_app,
    )
