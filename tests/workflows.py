"""Workflow definitions the tests run: the reference engine's documented examples and more."""

import asyncio
import threading
from datetime import timedelta

from django import forms

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    ExclusiveGateway,
    ParallelGateway,
    RetryPolicy,
    TimerStep,
    WorkflowDefinition,
)

#: Step executions, in order, as (workflow, step) — what the tests assert on.
calls: list[tuple[str, str]] = []
calls_lock = threading.Lock()


def record(context) -> None:
    with calls_lock:
        calls.append((context.get("tag", ""), context.step_name))


class Record(BaseMachineStep):
    """Records that it ran and sets ``<step>_done``."""

    def execute(self, context):
        record(context)
        context.set(f"{context.step_name}_done", True)


class AsyncRecord(BaseMachineStep):
    async def execute(self, context):
        await asyncio.sleep(0)
        record(context)
        context.set(f"{context.step_name}_done", True)


class Fail(BaseMachineStep):
    """Fails while ``context['fail']`` is truthy or while the attempt is below ``succeed_on``."""

    def __init__(self, succeed_on: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.succeed_on = succeed_on

    def execute(self, context):
        record(context)
        context.set("partial", "written before the failure")
        if self.succeed_on is not None and context.attempt >= self.succeed_on:
            context.set("payment", "ok")
            return
        if self.succeed_on is not None or FAIL_SWITCH["on"]:
            raise RuntimeError(f"payment service down (attempt {context.attempt})")
        context.set("payment", "ok")


FAIL_SWITCH = {"on": True}


class Review(BaseMachineStep):
    def execute(self, context):
        record(context)


def parallel_notifications() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="notifications",
        version="1.0.0",
        initial_step="start",
        steps={
            "start": Record(),
            "notify_email": Record(),
            "notify_slack": AsyncRecord(),
            "notify_sms": Record(),
            "complete": Record(),
        },
        edges=[
            Edge("start", "notify_email"),
            Edge("start", "notify_slack"),
            Edge("start", "notify_sms"),
            Edge("notify_email", "complete"),
            Edge("notify_slack", "complete"),
            Edge("notify_sms", "complete"),
        ],
    )


def conditional_review() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="review",
        version="1.0.0",
        initial_step="review",
        steps={"review": Review(), "approve": Record(), "reject": Record(), "notify": Record()},
        edges=[
            Edge("review", "approve", condition="context.get('score') >= 80"),
            Edge("review", "reject", condition="context.get('score') < 80"),
            # A join after a conditional split: it must not wait for the branch not taken.
            Edge("approve", "notify"),
            Edge("reject", "notify"),
        ],
    )


class ApprovalForm(forms.Form):
    approved = forms.BooleanField(required=False)
    comments = forms.CharField(required=False)
    amount_approved = forms.IntegerField(required=False, min_value=0)


class ManagerApproval(BaseHumanStep):
    title = "Approve the expense"
    form_class = ApprovalForm
    candidate_groups = ("managers",)


def expense_approval(version: str = "1.0.0") -> WorkflowDefinition:
    return WorkflowDefinition(
        name="expense",
        version=version,
        initial_step="submit",
        steps={
            "submit": Record(),
            "manager_approval": ManagerApproval(),
            "process_payment": Fail(),
            "reject": Record(),
        },
        edges=[
            Edge("submit", "manager_approval"),
            Edge(
                "manager_approval", "process_payment", condition="context.get('approved') == True"
            ),
            Edge("manager_approval", "reject", condition="context.get('approved') != True"),
        ],
    )


def retrying(max_attempts: int, succeed_on: int | None, backoff: float = 0) -> WorkflowDefinition:
    return WorkflowDefinition(
        name="retrying",
        version=f"{max_attempts}.{succeed_on or 0}.{int(backoff)}",
        initial_step="start",
        steps={
            "start": Record(),
            "process_payment": Fail(
                succeed_on=succeed_on, retry=RetryPolicy(max_attempts=max_attempts, backoff=backoff)
            ),
            "done": Record(),
        },
        edges=[Edge("start", "process_payment"), Edge("process_payment", "done")],
    )


def gateways() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="gateways",
        version="1.0.0",
        initial_step="start",
        steps={
            "start": Record(),
            "route": ExclusiveGateway(default="standard"),
            "express": Record(),
            "priority": Record(),
            "standard": Record(),
            "split": ParallelGateway(),
            "pack": Record(),
            "invoice": Record(),
            "ship": Record(),
        },
        edges=[
            Edge("start", "route"),
            Edge("route", "express", condition="context.get('weight', 0) < 1"),
            Edge("route", "priority", condition="context.get('weight', 0) < 5"),
            Edge("route", "standard"),
            Edge("express", "split"),
            Edge("priority", "split"),
            Edge("standard", "split"),
            Edge("split", "pack"),
            Edge("split", "invoice"),
            Edge("pack", "ship"),
            Edge("invoice", "ship"),
        ],
    )


def timer(duration: timedelta = timedelta(hours=1)) -> WorkflowDefinition:
    return WorkflowDefinition(
        name="timer",
        version="1.0.0",
        initial_step="start",
        steps={"start": Record(), "wait": TimerStep(duration), "after": Record()},
        edges=[Edge("start", "wait"), Edge("wait", "after")],
    )


class Rework(BaseHumanStep):
    title = "Review the draft"


def rework_loop() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="rework",
        version="1.0.0",
        initial_step="draft",
        steps={"draft": Record(), "review": Rework(), "publish": Record()},
        edges=[
            Edge("draft", "review"),
            Edge("review", "draft", condition="context.get('approved') != True"),
            Edge("review", "publish", condition="context.get('approved') == True"),
        ],
    )
