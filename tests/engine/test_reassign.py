"""Handing a task to someone else: engine.reassign_task (and its API endpoint)."""

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError

from django_workflows import BaseHumanStep, WorkflowDefinition
from django_workflows.exceptions import TaskNotOpen
from django_workflows.models import HumanTask, WorkflowEvent
from django_workflows.permissions import can_complete_task

from ..factories import GroupFactory, UserFactory

pytestmark = pytest.mark.django_db


class Assigned(BaseHumanStep):
    title = "Approve"
    fields = ("ok",)

    def get_assignee(self, context):
        return context.get("approver")


@pytest.fixture
def task(engine):
    engine.registry.register_definition(
        WorkflowDefinition(name="handoff", version="1", initial_step="a", steps={"a": Assigned()})
    )
    first = UserFactory(username="first")
    instance = engine.start_workflow("handoff", initial_data={"approver": first.pk})
    return instance.human_tasks.get()


def test_the_assignee_hands_the_task_to_another_user(engine, task):
    second = UserFactory(username="second")
    moved = engine.reassign_task(task.pk, second.pk, by=task.assignee, reason="on leave")
    assert moved.assignee == second
    assert can_complete_task(moved, second) and not can_complete_task(moved, task.assignee)
    event = WorkflowEvent.objects.get(type="HumanTaskReassigned")
    assert event.payload["from_user_id"] == task.assignee_id
    assert event.payload["to_user_id"] == second.pk
    assert event.payload["user_id"] == task.assignee_id
    assert event.payload["reason"] == "on leave"


def test_to_groups_by_name_releases_the_claim(engine, task):
    member = UserFactory(groups=[GroupFactory(name="finance")])
    engine.claim_task(task.pk, task.assignee)
    moved = engine.reassign_task(task.pk, ["finance"], by=task.assignee)
    assert (moved.assignee, moved.claimed_by) == (None, None)
    assert [group.name for group in moved.candidate_groups.all()] == ["finance"]
    assert can_complete_task(moved, member)


def test_who_may_reassign_is_one_rule(engine, task):
    stranger = UserFactory()
    with pytest.raises(PermissionDenied):
        engine.reassign_task(task.pk, stranger.pk, by=stranger)
    assert HumanTask.objects.get(pk=task.pk).assignee_id == task.assignee_id
    stranger.user_permissions.add(Permission.objects.get(codename="reassign_any_task"))
    stranger = type(stranger).objects.get(pk=stranger.pk)  # permissions are cached
    assert engine.reassign_task(task.pk, stranger.pk, by=stranger).assignee == stranger


def test_bad_targets_are_clear_errors_and_change_nothing(engine, task):
    for to, field in ((424242, "to"), ([], "to"), (None, "to")):
        with pytest.raises(ValidationError) as refused:
            engine.reassign_task(task.pk, to, by=task.assignee)
        assert list(refused.value.message_dict) == [field]
    assert HumanTask.objects.get(pk=task.pk).assignee_id == task.assignee_id
    assert not WorkflowEvent.objects.filter(type="HumanTaskReassigned").exists()


def test_a_task_no_longer_open_is_not_reassigned(engine, task):
    engine.complete_task(task.pk, task.assignee, {"ok": True})
    with pytest.raises(TaskNotOpen):
        engine.reassign_task(task.pk, UserFactory().pk, by=task.assignee)


def test_over_the_api(engine, task, client, monkeypatch):
    import django_workflows.engine as engine_module

    monkeypatch.setattr(engine_module, "_default", engine)
    second = UserFactory(username="second")
    client.force_login(task.assignee)
    url = f"/api/workflows/tasks/{task.pk}/reassign/"
    refused = client.post(url, {"to": second.pk, "groups": ["x"]}, content_type="application/json")
    assert refused.status_code == 400
    response = client.post(
        url, {"to": second.pk, "reason": "holiday"}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["assignee"] == second.pk
    again = client.post(url, {"groups": ["finance"]}, content_type="application/json")
    assert again.status_code == 404  # no longer theirs: not even to see
