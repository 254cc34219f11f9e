"""Links to one object by its primary key, for lists: ``reverse()`` once per URL name,
not once per row.

``reverse()`` walks the URLconf's patterns each call, about 0.1 ms; a list of 50 rows
with two or three links a row spends more on its links than on its statements.
``pk_url`` reverses a URL once with a placeholder for the pk (per URL name, script
prefix, URLconf and current app) and then puts each pk in it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from django.contrib.admin.utils import quote
from django.urls import get_script_prefix, get_urlconf, reverse

#: Primary keys that ``quote()`` and ``reverse()`` leave as they are, and a placeholder
#: of the same shape (it passes the same path converters: ``int``, ``uuid``, ``str``).
_SHAPES = (
    (re.compile(r"[0-9]{1,18}"), "987654321987654321"),
    (
        re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        "d7f0a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b",
    ),
)


@lru_cache(maxsize=256)
def _around_pk(
    name: str, placeholder: str, script_prefix: str, urlconf: Any, current_app: str | None
) -> tuple[str, str] | None:
    """The URL of ``name`` before and after its pk (the script prefix: part of the key);
    None if the placeholder is not there once."""
    url = reverse(name, args=[placeholder], urlconf=urlconf, current_app=current_app)
    if url.count(placeholder) != 1:
        return None
    head, _placeholder, tail = url.partition(placeholder)
    return head, tail


def pk_url(name: str, pk: Any, current_app: str | None = None) -> str:
    """``reverse(name, args=[quote(pk)])`` for a URL whose one argument is a primary key
    (quoted as the admin's own links are); a pk other than an integer or a UUID goes
    through ``reverse()`` itself."""
    text = str(pk)
    for shape, placeholder in _SHAPES:
        if shape.fullmatch(text):
            around = _around_pk(name, placeholder, get_script_prefix(), get_urlconf(), current_app)
            if around is not None:
                return around[0] + text + around[1]
            break
    return reverse(name, args=[quote(pk)], current_app=current_app)
