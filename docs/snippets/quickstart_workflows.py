# expenses/workflows.py
from django import forms

from django_workflows import BaseHumanStep, BaseMachineStep, Edge, WorkflowDefinition, registry


class Submit(BaseMachineStep):
    def execute(self, context):
        if context.get("amount", 0) <= 0:
            raise ValueError("amount must be positive")
        context.set("submitted", True)


class ApprovalForm(forms.Form):
    comments = forms.CharField(required=False, widget=forms.Textarea)


class Approve(BaseHumanStep):
    title = "Approve the expense claim"
    form_class = ApprovalForm
    # One button per action; each sets these values in the context.
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}


class Pay(BaseMachineStep):
    def execute(self, context):
        context.set("paid", context.get("amount"))


class Reject(BaseMachineStep):
    def execute(self, context):
        context.set("paid", 0)


expense_claim = WorkflowDefinition(
    name="expense_claim",
    version="1.0.0",
    description="An expense claim: a manager approves it, then it is paid or rejected.",
    initial_step="submit",
    steps={"submit": Submit(), "approval": Approve(), "pay": Pay(), "reject": Reject()},
    edges=[
        Edge("submit", "approval"),
        Edge("approval", "pay", condition="context.get('approved') == True"),
        Edge("approval", "reject", condition="context.get('approved') != True"),
    ],
)
registry.register_definition(expense_claim)
