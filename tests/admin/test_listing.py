"""The long admin lists (admin/listing.py): a bounded count that says "more than N", no
statement that counts a whole table, and rows rendered as Django renders them."""

import re

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse, set_script_prefix
from django.utils import translation

from django_workflows.admin._common import badge, status_badge
from django_workflows.admin.tasks import HumanTaskAdmin
from django_workflows.links import pk_url as change_url
from django_workflows.models import HumanTask, WorkflowInstance
from django_workflows.paging import BoundedPaginator, bounded_count

pytestmark = pytest.mark.django_db

INSTANCES = reverse("admin:django_workflows_workflowinstance_changelist")
TASKS = reverse("admin:django_workflows_humantask_changelist")


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of 2 rows, counted up to 2 rows past the page."""
    monkeypatch.setattr(BoundedPaginator, "count_limit", 2)
    for model in (WorkflowInstance, HumanTask):
        monkeypatch.setattr(admin.site._registry[model], "list_per_page", 2)


def statements(client, url, **params):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
    assert response.status_code == 200
    return response, [q["sql"] for q in captured.captured_queries]


def whole_table_counts(sqls):
    return [s for s in sqls if "COUNT(" in s.upper() and "LIMIT" not in s.upper()]


@pytest.mark.parametrize(
    ("url", "name"), [(INSTANCES, "workflow instances"), (TASKS, "human tasks")]
)
def test_a_long_list_says_more_than_n_and_its_links_reach_further(
    admin_client, start, small_pages, url, name
):
    for n in range(8):
        start("approval", amount=n)

    first = admin_client.get(url)
    html = first.content.decode()
    cl = first.context["cl"]
    assert cl.paginator.count_is_exact is False
    assert cl.result_count == 4  # page 1 of 2 rows, and 2 rows past it
    assert f"more than 4 {name}" in html
    assert "more than 4 results" in html  # the search bar's count
    if url == INSTANCES:  # the task list has no actions
        assert f"Select all of more than 4 {name}" in html
        assert first.context["selection_note_all"] == "All of more than 4 selected"
    assert cl.paginator.num_pages == 2  # the links reach the bound

    further = admin_client.get(url, {"p": 2}).context["cl"]  # page 2 counts to 6
    assert (further.result_count, further.paginator.count_is_exact) == (6, False)
    last = admin_client.get(url, {"p": 4})  # the list ends before the bound: exact
    assert (last.context["cl"].result_count, last.context["cl"].paginator.count_is_exact) == (
        8,
        True,
    )
    assert f"8 {name}" in last.content.decode()
    assert "more than" not in last.content.decode()


def test_a_short_list_and_a_filtered_one_have_their_exact_count(
    admin_client, start, small_pages, failed
):
    for n in range(3):
        start("approval", amount=n)

    everything = admin_client.get(INSTANCES).context["cl"]
    only_failed = admin_client.get(INSTANCES, {"status__exact": "failed"})

    assert (everything.result_count, everything.paginator.count_is_exact) == (4, True)
    assert only_failed.context["cl"].result_count == 1
    assert only_failed.context["cl"].paginator.count_is_exact is True
    assert "1 workflow instance" in only_failed.content.decode()


@pytest.mark.parametrize("url", [INSTANCES, TASKS])
def test_no_statement_counts_a_whole_table_and_the_statements_stay_flat(admin_client, start, url):
    start("approval", amount=1)
    _, few = statements(admin_client, url)
    for n in range(30):
        start("approval", amount=n)
    response, many = statements(admin_client, url)

    assert len(response.context["cl"].result_list) == 31
    assert len(many) == len(few)
    assert whole_table_counts(few + many) == []
    counts = [s for s in many if "COUNT(" in s.upper()]
    # The list's count: a COUNT(*) of at most 50 + 1,000 + 1 ids, then the page.
    assert any(re.search(r"LIMIT 1051\b", s) for s in counts), counts


def test_the_row_checkbox_is_djangos(admin_client, start):
    instance = start("approval", amount=1)
    task = HumanTask.objects.get(instance=instance)
    task_admin = admin.site._registry[HumanTask]
    instance_admin = admin.site._registry[WorkflowInstance]

    assert task_admin.action_checkbox(task) == admin.ModelAdmin.action_checkbox(task_admin, task)
    assert instance_admin.action_checkbox(instance) == admin.ModelAdmin.action_checkbox(
        instance_admin, instance
    )
    with translation.override("de"):
        assert instance_admin.action_checkbox(instance) == admin.ModelAdmin.action_checkbox(
            instance_admin, instance
        )
    html = admin_client.get(INSTANCES).content.decode()
    assert f'name="_selected_action" value="{instance.pk}" class="action-select"' in html


def test_change_links_are_reverses_answers(start):
    instance = start("approval", amount=1)
    task = HumanTask.objects.get(instance=instance)
    name = "admin:django_workflows_humantask_change"

    assert change_url(name, task.pk) == reverse(name, args=[task.pk])
    instance_name = "admin:django_workflows_workflowinstance_change"
    assert change_url(instance_name, instance.pk) == reverse(instance_name, args=[instance.pk])
    # The app's own pages: <int:pk>.
    assert change_url("django_workflows:task", task.pk) == reverse(
        "django_workflows:task", args=[task.pk]
    )
    # A pk that needs quoting goes through reverse() itself.
    assert change_url(name, "a/b c") == reverse(name, args=[quote("a/b c")])
    set_script_prefix("/mounted/")
    try:
        assert (
            change_url(name, task.pk)
            == f"/mounted/admin/django_workflows/humantask/{task.pk}/change/"
        )
    finally:
        set_script_prefix("/")
    assert change_url(name, task.pk) == reverse(name, args=[task.pk])


def test_status_badges_are_the_choice_labels(start, failed):
    instance = start("approval", amount=1)
    task = HumanTask.objects.get(instance=instance)

    for obj in (instance, task, failed):
        assert status_badge(obj) == badge(obj.status, obj.get_status_display())
    with translation.override("de"):
        assert status_badge(instance) == badge(instance.status, instance.get_status_display())
    assert HumanTaskAdmin.get_changelist is not admin.ModelAdmin.get_changelist


@pytest.mark.parametrize(
    "url",
    [TASKS, reverse("admin:django_workflows_humantask_inbox"), "/api/workflows/tasks/?all=1"],
)
def test_task_lists_do_not_read_the_graph_or_the_context(admin_client, start, url):
    start("approval", amount=1)

    response, sqls = statements(admin_client, url)

    rows = [s for s in sqls if "django_workflows_humantask" in s and "COUNT(" not in s.upper()]
    page = next(s for s in rows if "django_workflows_definitionversion" in s)
    assert '"django_workflows_definitionversion"."graph"' not in page
    assert '"django_workflows_workflowinstance"."context"' not in page
    assert "approval" in response.content.decode()  # the definition's name is shown


def test_the_instance_list_does_not_read_what_its_rows_do_not_show(admin_client, start):
    start("approval", business_key="EXP-9", amount=1)

    response, sqls = statements(admin_client, INSTANCES)

    page = next(s for s in sqls if s.startswith('SELECT "django_workflows_workflowinstance"."id"'))
    for column in ("context", "tokens", "error", "error_traceback"):
        assert f'"django_workflows_workflowinstance"."{column}"' not in page
    assert '"django_workflows_workflowinstance"."current_steps"' in page  # a column
    assert "EXP-9" in response.content.decode()


def test_the_bounded_count_reads_the_rows_in_the_lists_order():
    """Kept ordered, the count reads the rows the first pages show (cached), not where a
    synchronized scan of a large table happens to start (docs/performance.md)."""
    with CaptureQueriesContext(connection) as queries:
        assert bounded_count(WorkflowInstance.objects.order_by("-started_at"), 5) == (0, True)

    [count] = [q["sql"] for q in queries]
    assert "ORDER BY" in count and "LIMIT 6" in count, count
