"""The demo's workflows, registered on the project registry by autodiscovery."""

from datetime import timedelta

from django import forms
from django.contrib.auth import get_user_model

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    ParallelGateway,
    SubWorkflowStep,
    WaitForSignal,
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
    summary = "{employee}: {amount} EUR"
    display_fields = {"employee": "Employee", "amount": "Amount (EUR)"}
    # The task page shows one button per action; Reject asks for confirmation.
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    action_kinds = {"Reject": "danger"}


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


class CheckPurchase(BaseMachineStep):
    description = "Check the purchase request."

    def execute(self, context):
        if not context.get("item") or not context.get("amount"):
            raise ValueError("a purchase needs an item and an amount")
        context.set("checked", True)


def the_board(context):
    """Ann, Bob and the demo user each get a task of their own."""
    names = context.get("board", ["ann", "bob", "demo"])
    users = get_user_model().objects.filter(username__in=names)
    return list(users.order_by("username").values_list("pk", flat=True))


class BoardApproval(BaseHumanStep):
    title = "Approve the purchase"
    description = "Two of the three board members approve; one rejection decides."
    summary = "{item}: {amount} EUR ({requester})"
    display_fields = {"item": "Item", "amount": "Amount (EUR)", "requester": "Requested by"}
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    action_kinds = {"Reject": "danger"}
    comment_required = ["Reject"]  # say why, in the task page's Comment (kept in the history)
    fields = ()  # the buttons say it all
    assignees = the_board
    completion = 2
    veto = "result.get('approved') == False"
    # Due in two days, a reminder every day, and after three days the managers take over.
    due_in = timedelta(days=2)
    remind_every = timedelta(days=1)
    escalate_after = timedelta(days=3)
    escalate_to = ["managers"]


class PlaceOrder(BaseMachineStep):
    description = "Order the item."

    def execute(self, context):
        context.set("ordered", True)


class DeclineOrder(BaseMachineStep):
    description = "Tell the requester the board said no."

    def execute(self, context):
        context.set("ordered", False)


purchase_approval = WorkflowDefinition(
    name="purchase_approval",
    version="1.0.0",
    description="A purchase two of three board members approve, with a deadline that acts.",
    initial_step="check",
    steps={
        "check": CheckPurchase(),
        "board": BoardApproval(),
        "order": PlaceOrder(),
        "decline": DeclineOrder(),
    },
    edges=[
        Edge("check", "board"),
        Edge("board", "order", condition="context.get('approved') == True"),
        Edge("board", "decline", condition="context.get('approved') != True"),
    ],
)


class ReserveLine(BaseMachineStep):
    description = "Reserve the line's items in the warehouse and price them."

    def execute(self, context):
        line = context.get("line") or {}
        context.set("subtotal", line.get("qty", 0) * line.get("price", 0))
        context.set("reserved", True)


line_item = WorkflowDefinition(
    name="line_item",
    version="1.0.0",
    description="One order line: reserved and priced (a sub-workflow of order_processing).",
    initial_step="reserve",
    steps={"reserve": ReserveLine()},
)


class AcceptOrder(BaseMachineStep):
    description = "Accept the order and its lines."

    def execute(self, context):
        if not context.get("lines"):
            raise ValueError("an order needs at least one line")
        context.set("order_status", "accepted")


class TotalOrder(BaseMachineStep):
    description = "Add up the lines' subtotals: the amount to pay."

    def execute(self, context):
        context.set("amount_due", sum(line["subtotal"] for line in context.get("lines_done")))


class ShipOrder(BaseMachineStep):
    description = "Ship the paid order."

    def execute(self, context):
        context.set("order_status", "shipped")


class ReleaseOrder(BaseMachineStep):
    description = "No payment within two days: release the reserved items."

    def execute(self, context):
        context.set("order_status", "released: not paid in time")


order_processing = WorkflowDefinition(
    name="order_processing",
    version="1.0.0",
    description=(
        "An order: each line reserved by a sub-workflow of its own, then a wait for the "
        "payment signal, released if it does not come within two days."
    ),
    initial_step="accept",
    steps={
        "accept": AcceptOrder(),
        "lines": SubWorkflowStep(
            "line_item",
            for_each="lines",  # one line_item instance per line, joined when all finish
            item_key="line",
            output={"subtotal": "subtotal"},
            results_key="lines_done",
        ),
        "total": TotalOrder(),
        # POST /api/workflows/signals/ {"name": "payment_received", "business_key": ...}
        "payment": WaitForSignal("payment_received", key="payment"),
        "ship": ShipOrder(),
        "release": ReleaseOrder(),
    },
    edges=[
        Edge("accept", "lines"),
        Edge("lines", "total"),
        Edge("total", "payment"),
        Edge("payment", "ship"),
        Edge("payment", "release", on="timeout", after=timedelta(days=2)),
    ],
)

registry.register_definition(expense_approval)
registry.register_definition(line_item)
registry.register_definition(order_processing)
registry.register_definition(order_fulfillment)
registry.register_definition(purchase_approval)
