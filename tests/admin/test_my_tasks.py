"""The "My tasks (N)" row: admin index, app index and navigation sidebar."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_workflows.admin import mytasks
from django_workflows.models import HumanTask

from ..factories import StaffFactory

pytestmark = pytest.mark.django_db

INDEX = reverse("admin:index")
APP_INDEX = reverse("admin:app_list", args=["django_workflows"])
ROW_URL = reverse("admin:django_workflows_mytask_changelist")
INBOX = reverse("admin:django_workflows_humantask_inbox")
INSTANCES = reverse("admin:django_workflows_workflowinstance_changelist")


def my_tasks_rows(response):
    """The texts of the "My tasks" links of a page (index, app list, sidebar)."""
    assert response.status_code == 200
    html = response.content.decode()
    links = re.findall(rf'<a href="{re.escape(ROW_URL)}"[^>]*>([^<]*)</a>', html)
    return [text for text in links if text != "View"]  # the row's name, not its View link


def test_the_index_and_the_app_index_show_my_tasks_with_the_count(client, start, approver):
    for amount in (1, 2):
        start("approval", amount=amount)  # for the managers, the approver's group
    start("check")  # for nobody
    client.force_login(approver)

    assert my_tasks_rows(client.get(INDEX)) == ["My tasks (2)"]
    assert my_tasks_rows(client.get(APP_INDEX)) == ["My tasks (2)"]


def test_the_navigation_sidebar_shows_it_and_it_leads_to_the_inbox(client, start, approver):
    start("approval", amount=1)
    client.force_login(approver)

    assert my_tasks_rows(client.get(INSTANCES)) == ["My tasks (1)"]  # the sidebar
    response = client.get(ROW_URL)
    assert response.status_code == 302
    assert response["Location"] == INBOX


def test_staff_status_or_view_permissions_count_nothing(client, start, bare_staff, accountant):
    start("approval", amount=1)
    start("check")

    for user in (bare_staff, accountant):
        client.force_login(user)
        assert my_tasks_rows(client.get(INDEX)) == ["My tasks (0)"], user


def test_a_superuser_counts_every_open_task(client, start, approver, admin_engine):
    start("approval", amount=1)
    start("check")
    done = HumanTask.objects.get(instance=start("approval", amount=3))
    admin_engine.complete_task(done.pk, approver, {}, action="Approve")
    client.force_login(StaffFactory(username="root", is_superuser=True))

    assert HumanTask.objects.get(pk=done.pk).status == "completed"
    assert my_tasks_rows(client.get(INDEX)) == ["My tasks (2)"]


def test_the_count_stops_at_its_bound(client, start, approver, monkeypatch):
    monkeypatch.setattr(mytasks, "MY_TASKS_BOUND", 2)
    for amount in range(3):
        start("approval", amount=amount)
    client.force_login(approver)

    assert my_tasks_rows(client.get(INDEX)) == ["My tasks (2+)"]


def _index_queries(client, start, count):
    while HumanTask.objects.count() < count:
        start("approval", amount=HumanTask.objects.count())
    with CaptureQueriesContext(connection) as queries:
        rows = my_tasks_rows(client.get(INDEX))
    assert rows == [f"My tasks ({count})"]
    return len(queries)


def test_the_count_costs_the_same_queries_whatever_the_tasks(client, start, approver):
    client.force_login(approver)
    baseline = _index_queries(client, start, 0)

    assert _index_queries(client, start, 3) == _index_queries(client, start, 40) == baseline


def test_the_count_is_two_queries_once_per_request(client, start, approver, monkeypatch):
    start("approval", amount=1)
    client.force_login(approver)
    client.get(INDEX)  # the session and the permission caches, as on any later page
    with CaptureQueriesContext(connection) as counted:
        client.get(INSTANCES)  # the sidebar's row
    monkeypatch.setattr(mytasks, "my_tasks_count", lambda request: (0, True))
    with CaptureQueriesContext(connection) as not_counted:
        client.get(INSTANCES)

    assert len(counted) - len(not_counted) == 2  # the user's groups, the bounded count


def test_the_migrations_keep_the_plain_label():
    # The lazy label is the admin's; the declared options (what migrations read) are not.
    assert mytasks.MyTask._meta.original_attrs["verbose_name_plural"] == "my tasks"
