"""N-of-M approvals over the API: each task is completed on its own, the detail tells how
far the step is, and a task the others decided is a conflict."""

import pytest

from django_workflows import BaseHumanStep, Edge, WorkflowDefinition
from django_workflows.models import HumanTask

from ..factories import GroupFactory, UserFactory
from .conftest import API, Done

pytestmark = pytest.mark.django_db

TASKS = f"{API}/tasks/"


class Board(BaseHumanStep):
    title = "Vote"
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    fields = ("comment",)


@pytest.fixture
def board(api_engine):
    people = [UserFactory(username=f"member{i}") for i in range(3)]
    api_engine.registry.register_definition(
        WorkflowDefinition(
            name="board",
            version="1",
            initial_step="decide",
            steps={
                "decide": Board(assignees=people, completion=2),
                "done": Done(),
            },
            edges=[Edge("decide", "done")],
        )
    )
    instance = api_engine.start_workflow("board")
    return people, list(HumanTask.objects.filter(instance=instance).order_by("slot"))


def complete(client, task, **body):
    return client.post(f"{TASKS}{task.pk}/complete/", {"action": "Approve", **body}, format="json")


def test_each_assignee_sees_and_completes_their_own_task(client_for, board):
    people, tasks = board
    inbox = client_for(people[1]).get(TASKS).json()["results"]
    assert [item["id"] for item in inbox] == [tasks[1].pk]
    assert inbox[0]["slot"] == 1 and inbox[0]["close_reason"] == ""

    detail = client_for(people[1]).get(f"{TASKS}{tasks[1].pk}/").json()
    assert detail["completion"] == {
        "rule": 2,
        "needed": 2,
        "completed": 0,
        "open": 3,
        "canceled": 0,
    }
    assert complete(client_for(people[1]), tasks[1]).status_code == 200
    detail = client_for(people[0]).get(f"{TASKS}{tasks[0].pk}/").json()
    assert detail["completion"]["completed"] == 1

    response = complete(client_for(people[0]), tasks[0], data={"comment": "ok"})
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "completed"

    late = complete(client_for(people[2]), tasks[2])
    assert late.status_code == 409, late.json()
    canceled = client_for(people[2]).get(f"{TASKS}{tasks[2].pk}/").json()
    assert canceled["status"] == "canceled"
    assert canceled["close_reason"] == "completion reached"
    assert canceled["completion"]["canceled"] == 1


def test_someone_elses_task_is_refused(client_for, board):
    people, tasks = board
    assert complete(client_for(people[0]), tasks[1]).status_code == 403


def test_a_one_task_step_has_no_completion_info(client_for, api_engine, outsider):
    instance = api_engine.start_workflow("approval", initial_data={"assignee": outsider.pk})
    task = instance.human_tasks.get()
    assert client_for(outsider).get(f"{TASKS}{task.pk}/").json()["completion"] is None


def test_the_steps_key_in_the_data_is_a_400(client_for, api_engine):
    member = UserFactory(groups=[GroupFactory(name="board")])
    api_engine.registry.register_definition(
        WorkflowDefinition(
            name="groups",
            version="1",
            initial_step="vote",
            steps={"vote": BaseHumanStep(assignees=["board", "audit"])},
        )
    )
    instance = api_engine.start_workflow("groups")
    task = instance.human_tasks.get(slot=0)
    response = client_for(member).post(
        f"{TASKS}{task.pk}/complete/", {"data": {"vote": "yes"}}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert "vote" in str(response.json())
