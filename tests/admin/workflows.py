"""Workflows the admin tests run, on their own registry (see conftest.admin_engine)."""

from datetime import timedelta

from django import forms

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    WorkflowDefinition,
    WorkflowRegistry,
)

#: While on, the payment steps raise.
PAYMENT_DOWN = {"on": False}


class Submit(BaseMachineStep):
    def execute(self, context):
        context.set("submitted", True)


class ApprovalForm(forms.Form):
    approved = forms.BooleanField(required=False)
    comments = forms.CharField(required=False, widget=forms.Textarea)
    amount_approved = forms.IntegerField(required=False, min_value=0)


class Approve(BaseHumanStep):
    title = "Approve the expense"
    description = "Check the amount, then approve or reject."
    form_class = ApprovalForm
    candidate_groups = ("managers",)
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    action_kinds = {"Reject": "danger"}
    due_in = timedelta(days=2)


class Pay(BaseMachineStep):
    def execute(self, context):
        if PAYMENT_DOWN["on"]:
            raise RuntimeError("payment service down")
        context.set("paid", context.get("amount"))


class Reject(BaseMachineStep):
    def execute(self, context):
        context.set("paid", 0)


class Check(BaseHumanStep):
    """No form, no actions, no groups: any staff user completes it with one button."""

    title = "Check the documents"


class Record(BaseMachineStep):
    def execute(self, context):
        context.set(f"{context.step_name}_done", True)


def approval() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="approval",
        version="1.0",
        description="Submit, a manager approves, then pay or reject.",
        initial_step="submit",
        steps={"submit": Submit(), "approve": Approve(), "pay": Pay(), "reject": Reject()},
        edges=[
            Edge("submit", "approve"),
            Edge("approve", "pay", condition="context.get('approved') == True"),
            Edge("approve", "reject", condition="context.get('approved') != True"),
        ],
    )


def check() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="check",
        version="1.0",
        initial_step="start",
        steps={"start": Record(), "check": Check(), "done": Record()},
        edges=[Edge("start", "check"), Edge("check", "done")],
    )


def payment() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="payment",
        version="2.0",
        initial_step="start",
        steps={"start": Record(), "charge": Pay(), "done": Record()},
        edges=[Edge("start", "charge"), Edge("charge", "done")],
    )


def build_registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()
    for factory in (approval, check, payment):
        registry.register_definition(factory())
    return registry
