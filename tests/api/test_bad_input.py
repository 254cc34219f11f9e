"""Bad input through the API: an assignee that is no user, a rejection without the
approval's fields, a form-less step asked to overwrite the workflow's data.

Each answers 400 with a message naming the problem, and nothing is lost or run twice.
"""

import pytest
from django import forms

from django_workflows import BaseHumanStep, BaseMachineStep, Edge, WorkflowDefinition
from django_workflows.models import HumanTask, StepRun, WorkflowInstance

from .conftest import API

ran: list[str] = []


class Prepare(BaseMachineStep):
    def execute(self, context):
        ran.append(context.step_name)


class Pay(BaseMachineStep):
    def execute(self, context):
        context.set("paid", context.get("amount"))


class Assigned(BaseHumanStep):
    title = "Approve"
    actions = {"Done": {"done": True}}

    def get_assignee(self, context):
        return context.get("approver")


class ApprovalForm(forms.Form):
    cost_center = forms.CharField()


class RejectForm(forms.Form):
    comments = forms.CharField()


class Approval(BaseHumanStep):
    title = "Approve the purchase order"
    candidate_groups = ("managers",)
    form_class = ApprovalForm
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    action_forms = {"Reject": RejectForm}


class Formless(BaseHumanStep):
    title = "Approve (no form)"
    candidate_groups = ("managers",)


@pytest.fixture(autouse=True)
def definitions(api_engine):
    ran.clear()
    register = api_engine.registry.register_definition
    register(
        WorkflowDefinition(
            name="assigned_first", version="1", initial_step="a", steps={"a": Assigned()}
        )
    )
    register(
        WorkflowDefinition(
            name="assigned_later",
            version="1",
            initial_step="prepare",
            steps={"prepare": Prepare(), "a": Assigned()},
            edges=[Edge("prepare", "a")],
        )
    )
    register(
        WorkflowDefinition(
            name="handover",
            version="1",
            initial_step="first",
            steps={"first": Formless(), "a": Assigned()},
            edges=[Edge("first", "a")],
        )
    )
    for name, step in (("po", Approval()), ("po_formless", Formless())):
        register(
            WorkflowDefinition(
                name=name,
                version="1",
                initial_step="approval",
                steps={"approval": step, "pay": Pay(), "rejected": Prepare()},
                edges=[
                    Edge("approval", "pay", condition="context.get('approved') == True"),
                    Edge("approval", "rejected", condition="context.get('approved') != True"),
                ],
            )
        )


def start(client, workflow, data):
    return client.post(f"{API}/instances/", {"workflow": workflow, "data": data}, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize("approver", [424242, "abc", [1]])
def test_a_start_naming_no_user_is_a_400_and_starts_nothing(client_for, starter, approver):
    response = start(client_for(starter), "assigned_first", {"approver": approver})
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert "human step 'a': its assignee" in body["errors"]["data"][0]
    assert repr(approver) in body["errors"]["data"][0]
    assert not WorkflowInstance.objects.exists()


@pytest.mark.django_db
def test_a_start_whose_step_routes_to_no_user_is_a_400_and_the_step_ran_once(
    client_for, starter, api_engine
):
    response = start(client_for(starter), "assigned_later", {"approver": 424242})
    assert response.status_code == 400, response.content
    message = response.json()["errors"]["data"][0]
    instance = WorkflowInstance.objects.get()
    assert f"instance {instance.pk} failed at step 'prepare'" in message
    assert "424242" in message
    assert instance.status == "failed"
    assert ran == ["prepare"]
    assert api_engine.run_due_timers() == 0  # nothing left to re-run
    assert ran == ["prepare"]


@pytest.mark.django_db
def test_a_completion_naming_no_user_is_a_400_and_the_task_stays_open(client_for, starter, manager):
    instance_id = start(client_for(starter), "handover", {}).json()["id"]
    task = HumanTask.objects.get(instance_id=instance_id)
    response = client_for(manager).post(
        f"{API}/tasks/{task.pk}/complete/", {"data": {"approver": 424242}}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "424242" in response.json()["errors"]["data"][0]
    task.refresh_from_db()
    assert task.status == "open"
    assert not StepRun.objects.filter(instance_id=instance_id, step_name="a").exists()


@pytest.mark.django_db
def test_a_rejection_needs_only_the_reject_form_and_the_schema_says_so(
    client_for, starter, manager
):
    instance_id = start(client_for(starter), "po", {"amount": 900}).json()["id"]
    task = HumanTask.objects.get(instance_id=instance_id)
    client = client_for(manager)
    detail = client.get(f"{API}/tasks/{task.pk}/").json()
    assert detail["action_schemas"]["Reject"]["required"] == ["comments"]
    assert detail["action_schemas"]["Approve"]["required"] == ["cost_center"]

    refused = client.post(
        f"{API}/tasks/{task.pk}/complete/", {"action": "Reject", "data": {}}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"comments": ["This field is required."]}
    response = client.post(
        f"{API}/tasks/{task.pk}/complete/",
        {"action": "Reject", "data": {"comments": "over budget"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["context"] == {
        "amount": 900,
        "comments": "over budget",
        "approved": False,
    }


@pytest.mark.django_db
def test_a_formless_approval_cannot_raise_the_amount(client_for, starter, manager):
    instance_id = start(client_for(starter), "po_formless", {"amount": 1000}).json()["id"]
    task = HumanTask.objects.get(instance_id=instance_id)
    client = client_for(manager)
    response = client.post(
        f"{API}/tasks/{task.pk}/complete/",
        {"data": {"approved": True, "amount": 1000000}},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["amount"]
    assert WorkflowInstance.objects.get(pk=instance_id).context == {"amount": 1000}
    response = client.post(
        f"{API}/tasks/{task.pk}/complete/", {"data": {"approved": True}}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["context"]["paid"] == 1000


@pytest.mark.django_db
def test_a_misspelt_field_is_a_400_naming_it(client_for, starter, manager):
    instance_id = start(client_for(starter), "po", {"amount": 900}).json()["id"]
    task = HumanTask.objects.get(instance_id=instance_id)
    response = client_for(manager).post(
        f"{API}/tasks/{task.pk}/complete/",
        {"action": "Reject", "data": {"coments": "over budget"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "coments": ["not a field of this task's form (its fields: comments)"]
    }


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["instances", "tasks"])
def test_an_ordering_it_cannot_sort_by_is_a_400_naming_it(client_for, superuser, path):
    client = client_for(superuser)
    response = client.get(f"{API}/{path}/?ordering=-bogus,status")
    assert response.status_code == 400
    (message,) = response.json()["errors"]["ordering"]
    assert message.startswith("cannot sort by -bogus (fields: ")
    assert client.get(f"{API}/{path}/?ordering=-status").status_code == 200
