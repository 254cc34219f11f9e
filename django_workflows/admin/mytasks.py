"""The "My tasks (N)" row of the admin index, the app index and the navigation sidebar.

Django builds those lists from the registered models (``AdminSite.get_app_list``), and a
reusable app can neither patch the site nor reliably override ``admin/index.html`` or
``admin/app_list.html`` (the first app in ``INSTALLED_APPS`` wins, usually the admin).
So the row is a registered proxy model, ``MyTask``, whose list URL leads to the inbox.

The count: the row's label is the model's ``verbose_name_plural``, read while the list
is built for a request. The label here is lazy: Django calls ``has_module_permission``
with the request just before it reads the label, which records the request (in a
context variable, so threads and async tasks do not share it); the label then counts
that user's inbox once per request, bounded (``paging.bounded_count``): two queries,
whatever the number of tasks.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.functional import lazy
from django.utils.translation import gettext as _

from ..models import MyTask
from ..paging import bounded_count
from ..permissions import completable_tasks, is_active_user
from ._common import OnePageAdmin

#: The row counts up to this many tasks, then shows "99+".
MY_TASKS_BOUND = 99

_request: ContextVar[weakref.ReferenceType[HttpRequest] | None] = ContextVar(
    "dwf_my_tasks_request", default=None
)


def my_tasks_count(request: HttpRequest) -> tuple[int, bool]:
    """The open tasks ``request.user`` may complete (the inbox's rule), counted up to
    ``MY_TASKS_BOUND``: (the count, whether it is exact). Counted once per request."""
    cached = getattr(request, "_dwf_my_tasks", None)
    if cached is None:
        cached = bounded_count(completable_tasks(request.user), MY_TASKS_BOUND)
        request._dwf_my_tasks = cached  # type: ignore[attr-defined]
    return cached


def my_tasks_label(request: HttpRequest | None = None) -> str:
    """ "My tasks (3)", "My tasks (99+)"; "My tasks" outside a request."""
    if request is None:
        ref = _request.get()
        request = ref() if ref is not None else None
    if request is None or not is_active_user(getattr(request, "user", None)):
        return _("My tasks")
    count, exact = my_tasks_count(request)
    shown = str(count) if exact else f"{count}+"
    return _("My tasks (%(count)s)") % {"count": shown}


# The label the admin's lists show for the row (see the module's docstring). The
# model's declared options, which migrations read, keep the plain "my tasks".
MyTask._meta.verbose_name_plural = lazy(my_tasks_label, str)()


@admin.register(MyTask)
class MyTaskAdmin(OnePageAdmin):
    """No list, no object page: one URL, the row's link, which leads to the inbox.

    Shown to every active staff user, like the inbox: the count is what the task rule
    gives them, so staff status alone shows "My tasks (0)".
    """

    page_view = "inbox_redirect"

    def has_module_permission(self, request: HttpRequest) -> bool:
        _request.set(weakref.ref(request))  # for the label, read next
        return is_active_user(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_active_user(request.user)

    def inbox_redirect(self, request: HttpRequest) -> HttpResponse:
        url = reverse("admin:django_workflows_humantask_inbox", current_app=self.admin_site.name)
        return HttpResponseRedirect(url)
