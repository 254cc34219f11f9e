"""One permission rule: what the API allows by model permission, not by staff status,
and the admin and the API giving the same answers for every kind of user."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_workflows import BaseHumanStep, Edge, WorkflowDefinition, WorkflowStatus
from django_workflows.models import WorkflowInstance
from django_workflows.substitutes import add_substitute

from .. import workflows
from ..factories import GroupFactory, StaffFactory, UserFactory
from .conftest import API

pytestmark = pytest.mark.django_db

INSTANCES = f"{API}/instances/"


def grant(user, *codenames):
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="django_workflows", codename__in=codenames
        )
    )
    return type(user).objects.get(pk=user.pk)  # a fresh object: no stale permission cache


@pytest.fixture
def failed(expense, task, manager, api_engine):
    """The expense approved by a manager: its payment step failed."""
    instance = api_engine.complete_task(task.pk, manager, {"approved": True})
    assert instance.status == WorkflowStatus.FAILED
    return instance


def status_of(instance):
    return WorkflowInstance.objects.get(pk=instance.pk).status


# -- staff status alone grants nothing in the API ------------------------------------


def test_staff_without_permissions_do_not_see_others_instances(client_for, expense, task):
    client = client_for(StaffFactory())

    listing = client.get(INSTANCES)
    detail = client.get(f"{INSTANCES}{expense.pk}/")
    tasks = client.get(f"{API}/tasks/", {"all": 1})
    task_detail = client.get(f"{API}/tasks/{task.pk}/")

    assert listing.json()["results"] == []
    assert detail.status_code == 404
    assert tasks.json()["results"] == []
    assert task_detail.status_code == 404


def test_staff_without_permissions_may_not_cancel_others_instances(client_for, expense):
    response = client_for(StaffFactory()).post(f"{INSTANCES}{expense.pk}/cancel/")

    assert response.status_code == 404
    assert status_of(expense) == WorkflowStatus.WAITING


def test_staff_without_permissions_may_not_retry_others_instances(client_for, failed):
    workflows.FAIL_SWITCH["on"] = False

    response = client_for(StaffFactory()).post(f"{INSTANCES}{failed.pk}/retry/")

    assert response.status_code == 404
    assert status_of(failed) == WorkflowStatus.FAILED


def test_the_view_permission_shows_every_instance_but_cancels_none(client_for, expense, task):
    viewer = grant(UserFactory(), "view_workflowinstance")
    client = client_for(viewer)

    assert [i["id"] for i in client.get(INSTANCES).json()["results"]] == [str(expense.pk)]
    assert client.get(f"{INSTANCES}{expense.pk}/").status_code == 200
    assert client.get(f"{API}/tasks/{task.pk}/").status_code == 200
    response = client.post(f"{INSTANCES}{expense.pk}/cancel/")

    assert response.status_code == 403
    assert "change_workflowinstance" in response.json()["detail"]
    assert status_of(expense) == WorkflowStatus.WAITING


def test_the_change_permission_retries_others_instances(client_for, failed):
    operator = grant(UserFactory(), "change_workflowinstance")
    workflows.FAIL_SWITCH["on"] = False

    response = client_for(operator).post(f"{INSTANCES}{failed.pk}/retry/")

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == WorkflowStatus.COMPLETED


def test_the_change_permission_cancels_others_instances(client_for, expense):
    operator = grant(UserFactory(), "change_workflowinstance")

    response = client_for(operator).post(f"{INSTANCES}{expense.pk}/cancel/")

    assert response.status_code == 200, response.json()
    assert status_of(expense) == WorkflowStatus.CANCELED


def test_the_view_permission_does_not_complete_tasks(client_for, task):
    viewer = grant(StaffFactory(), "view_workflowinstance", "view_humantask")

    response = client_for(viewer).post(
        f"{API}/tasks/{task.pk}/complete/", {"data": {"approved": True}}, format="json"
    )

    assert response.status_code == 403


# -- the admin and the API agree ---------------------------------------------------------

#: Who, and what they may do with the expense instance (started by ``starter``, its
#: task offered to the group ``managers``): see it, cancel it, complete its task.
TABLE = [
    # who                 see    cancel complete
    ("plain", False, False, False),
    ("staff", False, False, False),
    ("staff+view", True, False, False),
    ("staff+change", True, True, False),
    ("superuser", True, True, True),
    ("starter", True, True, False),
    ("task holder", True, False, True),
    ("substitute", True, False, True),  # of a task holder, now
    ("past substitute", False, False, False),  # of a task holder, last week
]


def make_user(who, starter, managers):
    if who == "plain":
        return UserFactory()
    if who == "staff":
        return StaffFactory()
    if who == "staff+view":
        return grant(StaffFactory(), "view_workflowinstance")
    if who == "staff+change":
        return grant(StaffFactory(), "change_workflowinstance")
    if who == "superuser":
        return StaffFactory(is_superuser=True)
    if who == "starter":
        starter.is_staff = True  # to enter the admin at all
        starter.save(update_fields=["is_staff"])
        return starter
    if who in ("substitute", "past substitute"):
        holder, deputy = StaffFactory(groups=[managers]), StaffFactory()
        days = 0 if who == "substitute" else -7
        now = timezone.now()
        add_substitute(
            holder, deputy, now + timedelta(days=days - 1), now + timedelta(days=days + 1)
        )
        return deputy
    return StaffFactory(groups=[managers])  # a member of the task's candidate group


def admin_answers(user, instance, task):
    """What the admin allows: see the instance page, cancel it, complete its task."""
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:django_workflows_workflowinstance_change", args=[instance.pk]))
    cancel = client.get(
        reverse("admin:django_workflows_workflowinstance_cancel", args=[instance.pk])
    )
    complete = client.get(reverse("admin:django_workflows_humantask_complete", args=[task.pk]))
    if not user.is_staff:
        # Django's own gate: only staff enter the admin, whatever the rule says.
        assert page.status_code == cancel.status_code == complete.status_code == 302
        assert page.url.startswith(reverse("admin:login"))
        return None
    assert page.status_code in (200, 403), page.status_code
    assert cancel.status_code in (200, 403), cancel.status_code
    may_complete = (
        complete.status_code == 200 and 'id="dwf-complete-form"' in complete.content.decode()
    )
    return page.status_code == 200, cancel.status_code == 200, may_complete


def api_answers(client, instance, task):
    """What the API allows, asked without changing anything."""
    detail = client.get(f"{INSTANCES}{instance.pk}/")
    assert detail.status_code in (200, 404), detail.status_code
    # An invalid reason: 400 once permission is granted, 403/404 before; nothing changes.
    cancel = client.post(f"{INSTANCES}{instance.pk}/cancel/", {"reason": "x" * 1001}, format="json")
    assert cancel.status_code in (400, 403, 404), cancel.status_code
    task_detail = client.get(f"{API}/tasks/{task.pk}/")
    may_complete = task_detail.status_code == 200 and task_detail.json()["can_complete"]
    return detail.status_code == 200, cancel.status_code == 400, may_complete


@pytest.mark.parametrize(("who", "see", "cancel", "complete"), TABLE)
def test_the_admin_and_the_api_agree(
    client_for, starter, managers, expense, task, who, see, cancel, complete
):
    user = make_user(who, starter, managers)

    api = api_answers(client_for(user), expense, task)
    admin = admin_answers(user, expense, task)

    assert api == (see, cancel, complete)
    assert admin in (None, api)
    assert status_of(expense) == WorkflowStatus.WAITING


@pytest.mark.parametrize("who", ["starter", "task holder"])
def test_people_involved_see_the_instance_without_being_staff(
    client_for, starter, managers, expense, task, who
):
    user = starter if who == "starter" else UserFactory(groups=[managers])

    assert client_for(user).get(f"{INSTANCES}{expense.pk}/").status_code == 200


# -- candidate groups are names: unknown groups fail closed -------------------------------


class AuditDecision(BaseHumanStep):
    title = "Audit"
    candidate_groups = ("auditors",)  # no such group yet


def test_a_task_of_a_group_that_does_not_exist_waits_for_that_group(
    client_for, api_engine, wf_registry, starter
):
    wf_registry.register_definition(
        WorkflowDefinition(
            name="audit",
            version="1",
            initial_step="audit",
            steps={"audit": AuditDecision(), "done": workflows.Record()},
            edges=[Edge("audit", "done")],
        )
    )
    instance = api_engine.start_workflow("audit", started_by=starter)
    task = instance.human_tasks.get()
    viewer = grant(StaffFactory(), "view_humantask")
    url = f"{API}/tasks/{task.pk}/complete/"

    shown = client_for(viewer).get(f"{API}/tasks/{task.pk}/").json()
    refused = client_for(viewer).post(url, {}, format="json")
    auditor = UserFactory(groups=[GroupFactory(name="auditors")])  # the group, created later
    done = client_for(auditor).post(url, {}, format="json")

    assert shown["candidate_groups"] == ["auditors"]
    assert shown["can_complete"] is False
    assert refused.status_code == 403
    assert done.status_code == 200, done.json()
    assert done.json()["status"] == WorkflowStatus.COMPLETED
