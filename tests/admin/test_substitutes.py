"""Substitutes in the admin: the inbox and task page of a substitute, the history line,
and the substitution pages (one's own; everyone's with change_substitution)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_workflows.models import HumanTask, Substitution
from django_workflows.substitutes import add_substitute

from ..factories import StaffFactory
from .conftest import grant

pytestmark = pytest.mark.django_db

INBOX = reverse("admin:django_workflows_humantask_inbox")
LIST = reverse("admin:django_workflows_substitution_changelist")
ADD = reverse("admin:django_workflows_substitution_add")


def change_url(row):
    return reverse("admin:django_workflows_substitution_change", args=[row.pk])


def when(days):
    return timezone.now() + timedelta(days=days)


@pytest.fixture
def deputy(db):
    """Staff in no group, without any permission of the app."""
    return StaffFactory(username="deputy")


def test_a_substitute_sees_and_completes_the_absent_managers_task(
    client, waiting, other_manager, deputy
):
    instance, task = waiting
    client.force_login(deputy)
    assert client.get(INBOX).context["tasks"] == []
    add_substitute(other_manager, deputy, when(-1), when(1), reason="holidays")

    assert [t.pk for t in client.get(INBOX).context["tasks"]] == [task.pk]
    page = client.get(reverse("admin:django_workflows_humantask_complete", args=[task.pk]))
    assert page.status_code == 200 and page.context["can_complete"]
    response = client.post(
        reverse("admin:django_workflows_humantask_complete", args=[task.pk]),
        {"_action": "Approve"},
    )
    assert response.status_code == 302

    task.refresh_from_db()
    assert (task.status, task.completed_by, task.completed_on_behalf_of) == (
        "completed",
        deputy,
        other_manager,
    )
    # The history of the instance, and the task page, say for whom it was done.
    history = client.get(
        reverse("admin:django_workflows_workflowinstance_change", args=[instance.pk])
    )
    assert history.status_code == 200
    assert "completed by deputy on behalf of other_manager" in history.content.decode()
    page = client.get(reverse("admin:django_workflows_humantask_complete", args=[task.pk]))
    assert "by deputy on behalf of other_manager at" in page.content.decode()


def test_an_ended_substitution_shows_nothing(client, waiting, other_manager, deputy):
    add_substitute(other_manager, deputy, when(-3), when(-1))
    client.force_login(deputy)
    assert client.get(INBOX).context["tasks"] == []
    _, task = waiting
    page = client.get(reverse("admin:django_workflows_humantask_complete", args=[task.pk]))
    assert page.status_code == 403


def test_staff_name_their_own_substitute_without_any_permission(client, deputy, other_manager):
    client.force_login(other_manager)
    assert client.get(LIST).status_code == 200
    form = client.get(ADD)
    assert form.status_code == 200
    assert "user" not in form.context["adminform"].form.fields  # always oneself

    response = client.post(
        ADD,
        {
            "substitute": "deputy",
            "starts_at_0": when(0).strftime("%Y-%m-%d"),
            "starts_at_1": "00:00:00",
            "ends_at_0": when(7).strftime("%Y-%m-%d"),
            "ends_at_1": "00:00:00",
            "reason": "holidays",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    row = Substitution.objects.get()
    assert (row.user, row.substitute, row.reason) == (other_manager, deputy, "holidays")


@pytest.mark.parametrize(
    ("substitute", "start_day", "end_day", "field"),
    [
        ("other_manager", 0, 7, "substitute"),  # oneself
        ("nobody", 0, 7, "substitute"),
        ("deputy", 7, 0, "ends_at"),  # ends before it starts
    ],
)
def test_bad_input_is_refused_with_the_reason(
    client, deputy, other_manager, substitute, start_day, end_day, field
):
    client.force_login(other_manager)
    response = client.post(
        ADD,
        {
            "substitute": substitute,
            "starts_at_0": when(start_day).strftime("%Y-%m-%d"),
            "starts_at_1": "00:00:00",
            "ends_at_0": when(end_day).strftime("%Y-%m-%d"),
            "ends_at_1": "00:00:00",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field], errors
    assert not Substitution.objects.exists()


def test_each_user_sees_and_manages_their_own(client, deputy, other_manager, approver):
    mine = add_substitute(other_manager, deputy, when(-1), when(1))
    theirs = add_substitute(approver, other_manager, when(-1), when(1))
    stranger = add_substitute(approver, deputy, when(-1), when(1))

    client.force_login(other_manager)
    listed = {row.pk for row in client.get(LIST).context["cl"].result_list}
    assert listed == {mine.pk, theirs.pk}  # absent in one, standing in for the other
    assert client.get(change_url(mine)).context["has_change_permission"]
    assert not client.get(change_url(theirs)).context["has_change_permission"]
    assert client.get(change_url(stranger)).status_code == 302  # not theirs: not found
    response = client.post(
        reverse("admin:django_workflows_substitution_delete", args=[theirs.pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    assert Substitution.objects.filter(pk=theirs.pk).exists()
    response = client.post(
        reverse("admin:django_workflows_substitution_delete", args=[mine.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Substitution.objects.filter(pk=mine.pk).exists()


def test_change_substitution_manages_everyones(client, deputy, other_manager):
    boss = grant(StaffFactory(username="boss"), "change_substitution", "view_substitution")
    row = add_substitute(other_manager, deputy, when(-1), when(1))
    client.force_login(boss)
    assert {r.pk for r in client.get(LIST).context["cl"].result_list} == {row.pk}
    page = client.get(ADD)
    form = page.context["adminform"].form
    assert "user" in form.fields
    # Plain username boxes: the admin's "add user" popup would write an id into them.
    assert "related-widget-wrapper" not in page.content.decode()
    response = client.post(
        ADD,
        {
            "user": "deputy",
            "substitute": "other_manager",
            "starts_at_0": when(1).strftime("%Y-%m-%d"),
            "starts_at_1": "00:00:00",
            "ends_at_0": when(3).strftime("%Y-%m-%d"),
            "ends_at_1": "00:00:00",
        },
    )
    assert response.status_code == 302
    assert Substitution.objects.filter(user=deputy, substitute=other_manager).exists()
    assert HumanTask.objects.count() == 0  # nothing else touched


def test_the_inbox_of_a_substitute_runs_constant_queries(client, start, other_manager, deputy):
    add_substitute(other_manager, deputy, when(-1), when(1))
    client.force_login(deputy)

    def queries(count):
        while HumanTask.objects.count() < count:
            start("approval", amount=HumanTask.objects.count())
        with CaptureQueriesContext(connection) as captured:
            assert len(client.get(INBOX).context["tasks"]) == count
        return len(captured)

    assert queries(3) == queries(12)


def test_the_app_index_lists_substitutions_for_any_staff(client, deputy):
    client.force_login(deputy)
    response = client.get(reverse("admin:index"))
    assert LIST in response.content.decode()
    app = client.get(reverse("admin:app_list", args=["django_workflows"]))
    my_tasks = reverse("admin:django_workflows_mytask_changelist")  # leads to the inbox
    assert app.status_code == 200 and my_tasks in app.content.decode()
