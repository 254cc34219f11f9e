"""The demo's workflows, registered on the project registry by autodiscovery."""

from django import forms

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    ParallelGateway,
    WorkflowDefinition,
    registry,
)


class SubmitExpense(BaseMachineStep):
    description = "Check the claim and record it as submitted."

    def execute(self, context):
        amount = context.get("amount")
        if not isinstance(amount, int | float) or amount <= 0:
            raise ValueError(f"amount must be a positive number, got {amount!r}")
        context.set("submitted", True)


class ApprovalForm(forms.Form):
    approved = forms.BooleanField(required=False)
    comments = forms.CharField(required=False, widget=forms.Textarea)


class ManagerApproval(BaseHumanStep):
    title = "Approve expense claim"
    description = "A manager approves or rejects the claim."
    form_class = ApprovalForm
    candidate_groups = ("managers",)
    # The admin's task page shows one button per action.
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}


class PayExpense(BaseMachineStep):
    description = "Pay the approved amount."

    def execute(self, context):
        context.set("paid", context.get("amount"))


class RejectExpense(BaseMachineStep):
    description = "Tell the employee the claim was rejected."

    def execute(self, context):
        context.set("paid", 0)


expense_approval = WorkflowDefinition(
    name="expense_approval",
    version="1.0.0",
    description="An expense claim approved by a manager, then paid or rejected.",
    initial_step="submit",
    steps={
        "submit": SubmitExpense(),
        "manager_approval": ManagerApproval(),
        "pay": PayExpense(),
        "reject": RejectExpense(),
    },
    edges=[
        Edge("submit", "manager_approval"),
        Edge("manager_approval", "pay", condition="context.get('approved') == True"),
        Edge("manager_approval", "reject", condition="context.get('approved') != True"),
    ],
)


class ReceiveOrder(BaseMachineStep):
    description = "Accept the order."

    def execute(self, context):
        context.set("order_status", "received")


class Notify(BaseMachineStep):
    def __init__(self, channel: str) -> None:
        super().__init__(description=f"Notify the customer by {channel}.")
        self.channel = channel

    def execute(self, context):
        context.set(f"notified_{self.channel}", True)


class CompleteOrder(BaseMachineStep):
    description = "Close the order once every notification went out."

    def execute(self, context):
        context.set("order_status", "complete")


order_fulfillment = WorkflowDefinition(
    name="order_fulfillment",
    version="1.0.0",
    description="An order: notifications by e-mail, Slack and SMS in parallel, joined at the end.",
    initial_step="receive",
    steps={
        "receive": ReceiveOrder(),
        "fan_out": ParallelGateway(description="Send every notification at once."),
        "notify_email": Notify("email"),
        "notify_slack": Notify("slack"),
        "notify_sms": Notify("sms"),
        "complete": CompleteOrder(),
    },
    edges=[
        Edge("receive", "fan_out"),
        Edge("fan_out", "notify_email"),
        Edge("fan_out", "notify_slack"),
        Edge("fan_out", "notify_sms"),
        Edge("notify_email", "complete"),
        Edge("notify_slack", "complete"),
        Edge("notify_sms", "complete"),
    ],
)

registry.register_definition(expense_approval)
registry.register_definition(order_fulfillment)
