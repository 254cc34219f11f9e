"""A ``TemplateResponse`` whose rendering context is freed as soon as it is rendered.

Django's template context is a reference cycle (each ``ContextDict`` of a
``RequestContext`` points back at it), so whatever a page puts in its context (a
changelist and its rows, their model instances) outlives the response as garbage that
only Python's cyclic collector frees: a list page left some 600 to 1,800 such objects
per request, and the collections they caused became the slowest requests (issue 18).
Here the context's lists are emptied once the page is rendered, which breaks the cycle:
the rows are freed by reference counting when the response is. ``context_data`` (what
tests read) is kept.
"""

from __future__ import annotations

from typing import Any

from django.template import TemplateDoesNotExist
from django.template.backends.django import Template as DjangoTemplate
from django.template.backends.django import reraise
from django.template.context import Context, make_context
from django.template.response import TemplateResponse


class ReleasingTemplateResponse(TemplateResponse):
    """``TemplateResponse``, its context freed once rendered (module doc)."""

    @property
    def rendered_content(self) -> str:
        template = self.resolve_template(self.template_name)
        context = self.resolve_context(self.context_data)
        if not isinstance(template, DjangoTemplate):
            return template.render(context, self._request)
        engine = template.backend.engine
        rendering = make_context(context, self._request, autoescape=engine.autoescape)
        try:
            return template.template.render(rendering)
        except TemplateDoesNotExist as exc:
            reraise(exc, template.backend)
        finally:
            release(rendering)


def release(context: Context) -> None:
    """Break the context's reference cycles (it must not be rendered with any more)."""
    context.dicts.clear()
    context.render_context.dicts.clear()


def releasing(response: Any) -> Any:
    """``response`` as a ``ReleasingTemplateResponse`` if it is a plain, unrendered
    ``TemplateResponse`` (as ``ModelAdmin.changelist_view`` returns); else as it is."""
    if type(response) is TemplateResponse and not response.is_rendered:
        response.__class__ = ReleasingTemplateResponse
    return response
