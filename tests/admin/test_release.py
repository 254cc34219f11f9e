"""List pages free their rows by reference counting once rendered (``admin/release.py``):
Django's template context is a reference cycle, which left a page's rows to Python's
cyclic collector (issue 18)."""

import gc
import weakref

import pytest
from django.contrib import admin
from django.template.response import TemplateResponse
from django.test import RequestFactory
from django.urls import resolve, reverse

from django_workflows.admin.release import ReleasingTemplateResponse, releasing
from django_workflows.models import HumanTask, WorkflowInstance

pytestmark = pytest.mark.django_db

TASKS = reverse("admin:django_workflows_humantask_changelist")
INSTANCES = reverse("admin:django_workflows_workflowinstance_changelist")
INBOX = reverse("admin:django_workflows_humantask_inbox")


def get(url, user):
    request = RequestFactory().get(url)
    request.user = user
    request.resolver_match = resolve(url)
    return request


def rendered_rows(view, request, *, release=True):
    """Weak references to the rows of the page, after it is rendered and let go of."""
    response = view(request)
    if not release:
        response.__class__ = TemplateResponse
    response.render()
    context = response.context_data
    rows = context["cl"].result_list if "cl" in context else context["tasks"]
    refs = [weakref.ref(row) for row in rows]
    assert refs
    del response, context, rows
    return refs


@pytest.fixture
def no_collector():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.parametrize(
    ("model", "url", "view"),
    [
        (WorkflowInstance, INSTANCES, "changelist_view"),
        (HumanTask, TASKS, "changelist_view"),
        (HumanTask, INBOX, "inbox_view"),
    ],
)
def test_the_rows_are_freed_without_the_cyclic_collector(
    no_collector, start, admin_user, model, url, view
):
    start("approval", amount=1)
    start("approval", amount=2)
    page = getattr(admin.site._registry[model], view)

    kept = rendered_rows(page, get(url, admin_user), release=False)
    freed = rendered_rows(page, get(url, admin_user))

    assert any(ref() is not None for ref in kept)  # Django's context: garbage in a cycle
    assert all(ref() is None for ref in freed)


def test_the_context_data_stays_readable(admin_client, start):
    start("approval", amount=1)
    response = admin_client.get(TASKS)

    assert isinstance(response, ReleasingTemplateResponse)
    assert len(response.context["cl"].result_list) == 1
    assert len(response.context_data["cl"].result_list) == 1


def test_only_a_plain_unrendered_template_response_is_changed():
    plain = TemplateResponse(RequestFactory().get("/"), "admin/base.html", {})
    rendered = TemplateResponse(RequestFactory().get("/"), "admin/base.html", {})
    rendered.content = b"done"
    other = object()

    assert type(releasing(plain)) is ReleasingTemplateResponse
    assert type(releasing(rendered)) is TemplateResponse
    assert releasing(other) is other
