"""Human tasks: the inbox, all tasks, detail with the form, claim, unclaim, complete."""

import pytest
from django.contrib.auth.models import Permission

from django_workflows.models import HumanTask, StepRun, TaskStatus, WorkflowInstance

from ..factories import StaffFactory, UserFactory
from .conftest import API

pytestmark = pytest.mark.django_db

TASKS = f"{API}/tasks/"


def task_ids(response):
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["results"]]


@pytest.fixture
def decision(api_engine, starter, outsider):
    """An ``approval`` task assigned to ``outsider``, started by ``starter``."""
    instance = api_engine.start_workflow(
        "approval", initial_data={"assignee": outsider.pk}, started_by=starter
    )
    return instance.human_tasks.get()


# -- list -------------------------------------------------------------------------


def test_inbox_holds_the_open_tasks_the_user_may_complete(
    client_for, starter, manager, outsider, task, decision
):
    assert task_ids(client_for(manager).get(TASKS)) == [task.pk]
    assert task_ids(client_for(outsider).get(TASKS)) == [decision.pk]
    assert task_ids(client_for(starter).get(TASKS)) == []


def test_the_view_permission_shows_every_task_and_completes_none(client_for, task, decision):
    viewer = StaffFactory()
    viewer.user_permissions.add(Permission.objects.get(codename="view_humantask"))
    client = client_for(viewer)

    assert task_ids(client.get(TASKS)) == []  # both tasks are someone else's
    assert sorted(task_ids(client.get(TASKS, {"all": 1}))) == sorted([task.pk, decision.pk])
    assert task_ids(client_for(StaffFactory()).get(TASKS, {"all": 1})) == []  # staff alone


def test_superuser_inbox_holds_every_open_task(client_for, superuser, task, decision):
    assert sorted(task_ids(client_for(superuser).get(TASKS))) == sorted([task.pk, decision.pk])


def test_all_shows_others_the_tasks_of_the_instances_they_may_see(
    client_for, starter, manager, outsider, task, decision
):
    assert sorted(task_ids(client_for(starter).get(TASKS, {"all": 1}))) == sorted(
        [task.pk, decision.pk]
    )
    assert task_ids(client_for(outsider).get(TASKS, {"all": "true"})) == [decision.pk]
    assert task_ids(client_for(UserFactory()).get(TASKS, {"all": 1})) == []


def test_all_lists_completed_tasks_and_filters_by_status(
    client_for, manager, task, decision, api_engine
):
    api_engine.complete_task(task.pk, manager, {"approved": False})
    client = client_for(manager)

    assert task_ids(client.get(TASKS)) == []
    assert task_ids(client.get(TASKS, {"all": 1, "status": "completed"})) == [task.pk]
    assert task_ids(client.get(TASKS, {"all": 1, "status": "open"})) == []


def test_status_other_than_open_without_all_is_400(client_for, manager):
    response = client_for(manager).get(TASKS, {"status": "completed"})

    assert response.status_code == 400
    assert "add all=1" in response.json()["errors"]["status"][0]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"workflow": "approval"}, ["decision"]),
        ({"workflow": "expense"}, ["task"]),
        ({"step_name": "manager_approval"}, ["task"]),
        ({"step_name": "nope"}, []),
        ({"status": "open"}, ["task", "decision"]),
    ],
)
def test_filters(client_for, superuser, task, decision, query, expected):
    rows = {"task": task.pk, "decision": decision.pk}

    found = task_ids(client_for(superuser).get(TASKS, query))

    assert sorted(found) == sorted(rows[name] for name in expected)


def test_filter_by_instance(client_for, superuser, task, decision):
    client = client_for(superuser)

    assert task_ids(client.get(TASKS, {"instance": str(decision.instance_id)})) == [decision.pk]
    response = client.get(TASKS, {"instance": "not-a-uuid"})
    assert response.status_code == 400
    assert "instance" in response.json()["errors"]
    assert client.get(TASKS, {"all": "maybe"}).json()["errors"].keys() == {"all"}


def test_ordering(client_for, superuser, task, decision):
    client = client_for(superuser)

    assert task_ids(client.get(TASKS)) == [decision.pk, task.pk]  # newest first
    assert task_ids(client.get(TASKS, {"ordering": "created_at"})) == [task.pk, decision.pk]


# -- detail -----------------------------------------------------------------------


def test_detail_has_the_form_schema_actions_context_and_can_complete(
    client_for, starter, outsider, decision
):
    body = client_for(outsider).get(f"{TASKS}{decision.pk}/").json()

    assert body["form_schema"] == {
        "type": "object",
        "properties": {"comment": {"type": "string", "maxLength": 10}},
    }
    assert body["actions"] == ["Approve", "Reject"]
    assert body["assignee"] == outsider.pk
    assert body["context"] == {"assignee": outsider.pk}
    assert body["can_complete"] is True
    assert client_for(starter).get(f"{TASKS}{decision.pk}/").json()["can_complete"] is False


def test_detail_of_a_django_form_step_publishes_its_schema(client_for, manager, task):
    body = client_for(manager).get(f"{TASKS}{task.pk}/").json()

    assert body["form_schema"]["properties"]["amount_approved"] == {
        "title": "Amount approved",
        "type": "integer",
        "minimum": 0,
    }
    assert body["candidate_groups"] == ["managers"]
    assert body["actions"] == []


def test_detail_when_the_definition_is_gone_has_no_form(client_for, manager, task, wf_registry):
    wf_registry.unregister("expense")

    body = client_for(manager).get(f"{TASKS}{task.pk}/").json()

    assert body["form_schema"] is None
    assert body["actions"] == []
    assert body["title"] == "Approve the expense"


def test_tasks_of_others_are_404(client_for, task, decision):
    client = client_for(UserFactory())
    for path in (f"{task.pk}/", f"{decision.pk}/claim/", f"{decision.pk}/complete/"):
        method = client.get if path.count("/") == 1 else client.post
        response = method(TASKS + path)
        assert response.status_code == 404
        assert response.json()["detail"].startswith("no human task with id")


@pytest.mark.parametrize(
    "task_id", ["999999", "abc", "99999999999999999999999", "-1", "0.5", "1e3", "%00"]
)
def test_unknown_and_malformed_task_ids_are_404(client_for, superuser, task_id):
    client = client_for(superuser)

    for response in (
        client.get(f"{TASKS}{task_id}/"),
        client.post(f"{TASKS}{task_id}/complete/", {}, format="json"),
        client.post(f"{TASKS}{task_id}/claim/"),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


# -- claim and unclaim ------------------------------------------------------------


def test_claim_makes_the_task_the_claimers_alone(client_for, managers, manager, task):
    colleague = UserFactory(groups=[managers])

    response = client_for(manager).post(f"{TASKS}{task.pk}/claim/")

    assert response.status_code == 200, response.json()
    assert response.json()["claimed_by"] == manager.pk
    assert task_ids(client_for(colleague).get(TASKS)) == []
    conflict = client_for(colleague).post(f"{TASKS}{task.pk}/claim/")
    assert conflict.status_code == 409
    assert "is claimed by" in conflict.json()["detail"]
    denied = client_for(colleague).post(
        f"{TASKS}{task.pk}/complete/", {"data": {"approved": True}}, format="json"
    )
    assert denied.status_code == 403
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_claiming_again_is_harmless(client_for, manager, task):
    client = client_for(manager)

    assert [client.post(f"{TASKS}{task.pk}/claim/").status_code for _ in range(2)] == [200, 200]
    assert HumanTask.objects.get(pk=task.pk).claimed_by == manager


def test_a_user_who_sees_but_may_not_complete_may_not_claim(client_for, starter, task):
    response = client_for(starter).post(f"{TASKS}{task.pk}/claim/")

    assert response.status_code == 403
    assert "you may not claim task" in response.json()["detail"]
    assert HumanTask.objects.get(pk=task.pk).claimed_by is None


def test_unclaim(client_for, managers, manager, task):
    colleague = UserFactory(groups=[managers])
    client_for(manager).post(f"{TASKS}{task.pk}/claim/")

    refused = client_for(colleague).post(f"{TASKS}{task.pk}/unclaim/")
    assert refused.status_code == 403
    response = client_for(manager).post(f"{TASKS}{task.pk}/unclaim/")
    assert response.status_code == 200
    assert response.json()["claimed_by"] is None
    again = client_for(manager).post(f"{TASKS}{task.pk}/unclaim/")
    assert again.status_code == 409
    assert again.json()["detail"] == f"task {task.pk} is not claimed"


def test_claim_of_a_completed_task_is_409(client_for, manager, task, api_engine):
    api_engine.complete_task(task.pk, manager, {"approved": False})

    response = client_for(manager).post(f"{TASKS}{task.pk}/claim/")

    assert response.status_code == 409
    assert response.json()["code"] == "task_not_open"


# -- complete ---------------------------------------------------------------------


def test_complete_runs_the_workflow_on_and_returns_the_instance(client_for, manager, task):
    response = client_for(manager).post(
        f"{TASKS}{task.pk}/complete/",
        {"data": {"approved": False, "comments": "too much"}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["id"] == str(task.instance_id)
    assert body["status"] == "completed"
    assert body["context"]["comments"] == "too much"
    completed = HumanTask.objects.get(pk=task.pk)
    assert (completed.status, completed.completed_by) == (TaskStatus.COMPLETED, manager)


def test_complete_with_an_action_merges_its_values(client_for, outsider, decision):
    response = client_for(outsider).post(
        f"{TASKS}{decision.pk}/complete/",
        {"action": "Approve", "data": {"comment": "ok"}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["context"] == {
        "assignee": outsider.pk,
        "approved": True,
        "comment": "ok",
        "done": True,
    }


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"action": "Maybe"}, "action", "unknown action 'Maybe' (known: Approve, Reject)"),
        ({"data": {"comment": "far too long"}}, "comment", "at most 10 characters"),
        ({"data": ["x"]}, "data", "Expected a dictionary"),
        ({"data": {"comment": "a\x00"}}, "data", "NUL"),
    ],
)
def test_complete_with_invalid_data_is_400_and_leaves_the_task_open(
    client_for, outsider, decision, body, field, message
):
    response = client_for(outsider).post(f"{TASKS}{decision.pk}/complete/", body, format="json")

    assert response.status_code == 400, response.json()
    assert message in response.json()["errors"][field][0]
    assert HumanTask.objects.get(pk=decision.pk).status == TaskStatus.OPEN
    assert StepRun.objects.get(pk=decision.step_run_id).status == "waiting"
    assert not decision.instance.events.filter(type="HumanTaskCompleted").exists()


def test_complete_twice_is_409(client_for, manager, task):
    client = client_for(manager)
    url = f"{TASKS}{task.pk}/complete/"
    assert client.post(url, {"data": {"approved": False}}, format="json").status_code == 200

    response = client.post(url, {"data": {"approved": True}}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "task_not_open"
    assert WorkflowInstance.objects.get(pk=task.instance_id).context["approved"] is False


def test_complete_by_a_user_who_may_not_is_403_and_changes_nothing(client_for, starter, task):
    response = client_for(starter).post(
        f"{TASKS}{task.pk}/complete/", {"data": {"approved": True}}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["detail"] == f"you may not complete task {task.pk} (Approve the expense)"
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_staff_may_not_complete_a_task_of_a_group_they_are_not_in(client_for, task):
    viewer = StaffFactory()
    viewer.user_permissions.add(Permission.objects.get(codename="view_humantask"))

    hidden = client_for(StaffFactory()).post(f"{TASKS}{task.pk}/complete/", {}, format="json")
    seen = client_for(viewer).post(f"{TASKS}{task.pk}/complete/", {}, format="json")

    assert hidden.status_code == 404  # staff status shows nothing
    assert seen.status_code == 403  # seeing a task does not make it yours
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_complete_a_task_of_a_canceled_instance_is_409(client_for, manager, task, api_engine):
    api_engine.cancel_workflow(task.instance_id)

    response = client_for(manager).post(f"{TASKS}{task.pk}/complete/", {}, format="json")

    assert response.status_code == 409


def test_complete_when_the_definition_is_gone_is_409(client_for, manager, task, wf_registry):
    wf_registry.unregister("expense")

    response = client_for(manager).post(f"{TASKS}{task.pk}/complete/", {}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "definition_error"
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN
