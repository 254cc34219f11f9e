"""``{% pk_url "name" pk %}``: ``{% url "name" pk %}`` for a URL whose one argument is a
primary key, reversed once per URL name (``links.pk_url``): the inbox's rows."""

from __future__ import annotations

from typing import Any

from django import template

from ..links import pk_url as _pk_url

register = template.Library()


@register.simple_tag(takes_context=True)
def pk_url(context: template.Context, name: str, pk: Any) -> str:
    """The URL, with the current app of the request as ``{% url %}`` takes it."""
    request = context.get("request")
    current_app = getattr(request, "current_app", None)
    if current_app is None:
        match = getattr(request, "resolver_match", None)
        current_app = match.namespace if match is not None else None
    return _pk_url(name, pk, current_app)
