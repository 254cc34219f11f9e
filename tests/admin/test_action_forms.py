"""The admin's task page when an action has a form of its own (a Reject that asks only
for comments): the page shows every field, the button pressed decides what is required."""

import pytest
from django import forms
from django.urls import reverse

from django_workflows import BaseHumanStep, BaseMachineStep, Edge, WorkflowDefinition
from django_workflows.models import HumanTask, TaskStatus

pytestmark = pytest.mark.django_db


class PurchaseForm(forms.Form):
    cost_center = forms.CharField()


class RejectForm(forms.Form):
    comments = forms.CharField(widget=forms.Textarea)


class Approval(BaseHumanStep):
    title = "Approve the purchase"
    candidate_groups = ("managers",)
    form_class = PurchaseForm
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    action_forms = {"Reject": RejectForm}


class Noop(BaseMachineStep):
    def execute(self, context):
        pass


@pytest.fixture
def task(admin_engine, managers):
    admin_engine.registry.register_definition(
        WorkflowDefinition(
            name="purchase",
            version="1",
            initial_step="approval",
            steps={"approval": Approval(), "order": Noop(), "stop": Noop()},
            edges=[
                Edge("approval", "order", condition="context.get('approved') == True"),
                Edge("approval", "stop", condition="context.get('approved') != True"),
            ],
        )
    )
    instance = admin_engine.start_workflow("purchase", initial_data={"amount": 7})
    return HumanTask.objects.get(instance=instance)


def url(task):
    return reverse("admin:django_workflows_humantask_complete", args=[task.pk])


def test_the_page_asks_for_the_fields_of_every_button(client, task, approver):
    client.force_login(approver)
    html = client.get(url(task)).content.decode()
    assert 'name="cost_center"' in html
    assert 'name="comments"' in html


def test_reject_asks_only_for_comments(client, task, approver):
    client.force_login(approver)
    refused = client.post(url(task), {"_action": "Reject"})
    assert refused.status_code == 200
    form = refused.context["form"]
    assert form.errors == {"comments": ["This field is required."]}  # not cost_center
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN

    done = client.post(url(task), {"_action": "Reject", "comments": "not this quarter"})
    assert done.status_code == 302
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    assert task.result == {"comments": "not this quarter", "approved": False}


def test_approve_still_needs_the_cost_center(client, task, approver):
    client.force_login(approver)
    refused = client.post(url(task), {"_action": "Approve", "comments": "fine"})
    assert refused.status_code == 200
    assert refused.context["form"].errors == {"cost_center": ["This field is required."]}
    done = client.post(url(task), {"_action": "Approve", "cost_center": "CC-1"})
    assert done.status_code == 302
    task.refresh_from_db()
    assert task.result == {"cost_center": "CC-1", "approved": True}
