"""The instance page's history: user names for every ``*user_id`` of the events."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_workflows.admin.history import annotate_history
from django_workflows.models import HumanTask, WorkflowEvent

from ..factories import StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


def detail(instance):
    return reverse("admin:django_workflows_workflowinstance_change", args=[instance.pk])


def add_event(instance, type_="Custom", **payload):
    return WorkflowEvent.objects.create(
        instance=instance, type=type_, payload=payload, created_at=timezone.now()
    )


def test_the_history_shows_names_not_ids(admin_client, admin_engine, waiting, approver):
    instance, task = waiting
    approver.first_name, approver.last_name = "Ada", "Lovelace"
    approver.save()
    boss = StaffFactory(username="boss")
    admin_engine.claim_task(task.pk, approver)
    admin_engine.reassign_task(task.pk, boss, by=approver)
    add_event(instance, on_behalf_of_user_id=approver.pk, note="helper")

    html = admin_client.get(detail(instance)).content.decode()

    history = html.split('id="dwf-history"')[1]
    assert f'user: <strong title="approver #{approver.pk}">Ada Lovelace</strong>' in history
    assert f'to user: <strong title="boss #{boss.pk}">boss</strong>' in history
    assert f'on behalf of user: <strong title="approver #{approver.pk}">Ada Lovelace</strong>' in (
        history
    )
    assert "&quot;note&quot;: &quot;helper&quot;" in history  # the rest of the payload
    assert f"user_id&quot;: {approver.pk}" not in history


def test_a_deleted_user_shows_as_its_id(admin_client, waiting):
    instance, _task = waiting
    gone = UserFactory(username="gone")
    gone_id = gone.pk
    add_event(instance, user_id=gone_id)
    add_event(instance, from_user_id="not-a-number")
    gone.delete()

    html = admin_client.get(detail(instance)).content.decode()

    assert f"user: <strong>#{gone_id} (deleted)</strong>" in html
    assert "from user: <strong>#not-a-number (deleted)</strong>" in html


def test_no_user_is_a_dash_and_other_payloads_are_kept(django_assert_num_queries):
    events = [
        WorkflowEvent(type="A", payload={"user_id": None, "x": 1}),
        WorkflowEvent(type="B", payload=[1, 2]),
        WorkflowEvent(type="C", payload={}),
        WorkflowEvent(type="D", payload={"user_id": [1], "reuser_id_list": True}),
    ]

    with django_assert_num_queries(0):
        annotate_history(events)

    assert [e.payload_users for e in events] == [[("user", "-", "")], [], [], []]
    assert [e.payload_text for e in events] == [
        '{"x": 1}',
        "[1, 2]",
        "",
        '{"reuser_id_list": true, "user_id": [1]}',
    ]


def _detail_queries(client, instance, users):
    for n in range(users):
        user = UserFactory(username=f"u{n}")
        add_event(instance, user_id=user.pk, to_user_id=user.pk)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(detail(instance))
    assert response.content.decode().count('<span class="dwf-event-user">') >= 2 * users
    return len(queries)


def test_one_query_for_the_users_of_the_page(admin_client, start):
    one = start("approval", amount=1)
    many = start("approval", amount=2)

    assert _detail_queries(admin_client, one, 1) == _detail_queries(admin_client, many, 15)


def test_the_task_page_shows_names(admin_client, admin_engine, waiting, approver):
    _instance, task = waiting
    admin_engine.claim_task(task.pk, approver)

    html = admin_client.get(
        reverse("admin:django_workflows_humantask_complete", args=[task.pk])
    ).content.decode()

    assert "<dd>approver</dd>" in html
    assert HumanTask.objects.get(pk=task.pk).claimed_by == approver


def test_an_empty_optional_user_is_left_out(admin_client, waiting, approver):
    """A completion by the user themselves: no "on behalf of user: -"."""
    instance, _task = waiting
    add_event(instance, "HumanTaskCompleted", user_id=approver.pk, on_behalf_of_user_id=None)
    add_event(instance, "WorkflowStarted", user_id=None)

    html = admin_client.get(detail(instance)).content.decode()

    history = html.split('id="dwf-history"')[1]
    assert f'user: <strong title="approver #{approver.pk}">approver</strong>' in history
    assert "on behalf of" not in history
    assert "user: <strong>-</strong>" in history  # started by code: said so
