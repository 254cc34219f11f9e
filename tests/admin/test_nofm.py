"""N-of-M approvals in the admin: each assignee completes their own task on its page; the
task page of a task the others decided says why it was canceled."""

import pytest
from django.urls import reverse

from django_workflows import BaseHumanStep, WorkflowDefinition, WorkflowStatus
from django_workflows.models import HumanTask, TaskStatus

from ..factories import StaffFactory

pytestmark = pytest.mark.django_db


class Vote(BaseHumanStep):
    title = "Vote"
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}


def test_one_of_three_decides_and_the_others_read_why_they_are_closed(client, admin_engine):
    people = [StaffFactory(username=f"voter{i}") for i in range(3)]
    admin_engine.registry.register_definition(
        WorkflowDefinition(
            name="vote",
            version="1",
            initial_step="vote",
            steps={"vote": Vote(assignees=people, completion="any")},
        )
    )
    instance = admin_engine.start_workflow("vote")
    tasks = list(HumanTask.objects.filter(instance=instance).order_by("slot"))
    client.force_login(people[1])

    response = client.post(
        reverse("admin:django_workflows_humantask_complete", args=[tasks[1].pk]),
        {"_action": "Approve"},
    )

    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["vote"][0]["user"] == people[1].pk
    closed = HumanTask.objects.get(pk=tasks[0].pk)
    assert (closed.status, closed.close_reason) == (TaskStatus.CANCELED, "completion reached")
    client.force_login(StaffFactory(username="boss", is_superuser=True))
    page = client.get(reverse("admin:django_workflows_humantask_change", args=[closed.pk]))
    assert page.status_code == 200
    assert "completion reached" in page.content.decode()
