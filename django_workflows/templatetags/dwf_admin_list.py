"""``{% dwf_result_list cl %}``: Django's ``{% result_list cl %}`` (the same template,
``change_list_results.html``), its rows built by ``admin/results.py``."""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode

from ..admin.results import result_list

register = template.Library()


@register.tag(name="dwf_result_list")
def result_list_tag(parser: Any, token: Any) -> InclusionAdminNode:
    return InclusionAdminNode(
        parser,
        token,
        func=result_list,
        template_name="change_list_results.html",
        takes_context=False,
    )
