"""The changelists' rows (``admin/results.py``): Django's ``items_for_result`` markup,
cell for cell, built once per column instead of once per cell."""

from datetime import timedelta

import pytest
from django.contrib.admin.templatetags.admin_list import items_for_result
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_workflows.admin.results import _columns, fast_results, row_html
from django_workflows.models import HumanTask, HumanTaskGroup

from ..factories import StaffFactory
from .conftest import grant

pytestmark = pytest.mark.django_db

INSTANCES = reverse("admin:django_workflows_workflowinstance_changelist")
TASKS = reverse("admin:django_workflows_humantask_changelist")


@pytest.fixture
def varied(admin_engine, start, approver, failed):
    """Instances and tasks in many states: done, claimed, assigned, groups, overdue,
    markup in their texts, a business key, a failed instance."""
    tasks = [HumanTask.objects.get(instance=start("approval", amount=n)) for n in range(5)]
    start("check", business_key="<b>K&1</b>", started_by=approver)
    admin_engine.complete_task(tasks[0].pk, approver, {"comments": "ok " * 40}, action="Approve")
    admin_engine.claim_task(tasks[1].pk, approver)
    HumanTask.objects.filter(pk=tasks[2].pk).update(
        assignee=approver, due_at=timezone.now() - timedelta(hours=1), title="<i>T</i> & co"
    )
    HumanTask.objects.filter(pk=tasks[3].pk).update(due_at=timezone.now() + timedelta(days=1))
    HumanTaskGroup.objects.create(task=tasks[4], name="Auditors & <friends>")
    return tasks


def rows_both_ways(response):
    cl = response.context["cl"]
    ours = [row_html(row) for row in fast_results(cl)]  # one item a row, or one a cell
    djangos = [row_html(items_for_result(cl, row, None)) for row in cl.result_list]
    return ours, djangos


@pytest.mark.parametrize(
    ("url", "query"),
    [
        (INSTANCES, {}),
        (INSTANCES, {"status__exact": "failed"}),  # the links keep the filters
        (INSTANCES, {"o": "3.-7"}),
        (INSTANCES, {"q": "<b>K"}),
        (TASKS, {}),
        (TASKS, {"status__exact": "open"}),
        (TASKS, {"o": "-1.3"}),
        (TASKS, {"q": "Approve"}),
    ],
    ids=str,
)
def test_the_rows_are_djangos_cell_for_cell(admin_client, varied, url, query):
    response = admin_client.get(url, query)
    ours, djangos = rows_both_ways(response)

    assert djangos  # rows to compare
    assert ours == djangos


def test_the_rows_are_djangos_without_the_instance_links(client, varied):
    """Who sees every task, not every instance: the instance column is text."""
    client.force_login(grant(StaffFactory(username="tasks-only"), "view_humantask"))
    response = client.get(TASKS)
    ours, djangos = rows_both_ways(response)

    assert len(ours) == 6
    assert ours == djangos
    assert "field-instance_text" in ours[0]


def test_the_pages_show_the_fast_rows(admin_client, varied):
    for url in (INSTANCES, TASKS):
        response = admin_client.get(url)
        cl = response.context["cl"]
        assert _columns(cl) is not None  # every column is of a kind results.py shows
        html = response.content.decode()
        for row in rows_both_ways(response)[0]:
            assert f"<tr>{row}</tr>" in html


def test_a_column_of_another_kind_goes_through_django(admin_client, varied, monkeypatch):
    from django_workflows.admin.tasks import HumanTaskAdmin

    monkeypatch.setattr(HumanTaskAdmin, "list_display", ("title", "instance__business_key"))
    response = admin_client.get(TASKS)
    cl = response.context["cl"]

    assert _columns(cl) is None
    assert all(len(row) == 2 for row in fast_results(cl))  # Django's items, one a cell
    ours, djangos = rows_both_ways(response)
    assert ours == djangos
    assert 'class="field-instance__business_key"' in response.content.decode()


def test_the_task_list_reads_the_groups_in_one_statement(admin_client, varied):
    response = admin_client.get(TASKS)
    cl = response.context["cl"]
    with CaptureQueriesContext(connection) as queries:
        rows = fast_results(cl)

    assert len(queries) == 1  # the group names of the page (the rows: already read)
    assert any("Auditors &amp; &lt;friends&gt;, managers" in str(row[0]) for row in rows)
