"""Sub-workflows the tests run (engine, API, admin, and on a real qcluster)."""

import os

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    SubWorkflowStep,
    WorkflowDefinition,
)

#: While on, a line with ``fail`` fails to price (a test turns it off to retry).
FAIL = {"on": True}


class Price(BaseMachineStep):
    """Prices one line: ``total = qty * price``; fails for a line with ``fail``."""

    def execute(self, context):
        line = context["line"]
        if line.get("fail") and FAIL["on"]:
            raise RuntimeError(f"cannot price {line.get('sku')}")
        context.set("total", line["qty"] * line["price"])
        context.set("pid", os.getpid())


class Sum(BaseMachineStep):
    def execute(self, context):
        context.set("order_total", sum(r["total"] for r in context["priced"]))


class Done(BaseMachineStep):
    def execute(self, context):
        context.set("done", True)


class ApproveLine(BaseHumanStep):
    title = "Approve the line"
    fields = ("ok",)


def sub_price() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="sub_price", version="1", initial_step="price", steps={"price": Price()}, edges=[]
    )


def sub_order() -> WorkflowDefinition:
    """One child per order line, joined; then the lines' totals are summed."""
    return WorkflowDefinition(
        name="sub_order",
        version="1",
        initial_step="price_lines",
        steps={
            "price_lines": SubWorkflowStep(
                "sub_price",
                for_each="lines",
                item_key="line",
                input={"currency": "currency"},
                output={"total": "total", "pid": "pid"},
                results_key="priced",
            ),
            "sum": Sum(),
        },
        edges=[Edge("price_lines", "sum")],
    )


def sub_single() -> WorkflowDefinition:
    """One child; its ``total`` comes back as the parent's ``line_total``."""
    return WorkflowDefinition(
        name="sub_single",
        version="1",
        initial_step="price",
        steps={
            "price": SubWorkflowStep(
                "sub_price", input={"the_line": "line"}, output={"total": "line_total"}
            ),
            "done": Done(),
        },
        edges=[Edge("price", "done")],
    )


def sub_approve() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="sub_approve",
        version="1",
        initial_step="approve",
        steps={"approve": ApproveLine()},
        edges=[],
    )


def sub_approval() -> WorkflowDefinition:
    """Per-line approval: a child with a human task per line."""
    return WorkflowDefinition(
        name="sub_approval",
        version="1",
        initial_step="approve_lines",
        steps={
            "approve_lines": SubWorkflowStep(
                "sub_approve", for_each="lines", output=lambda ctx: ctx.get("ok")
            ),
            "done": Done(),
        },
        edges=[Edge("approve_lines", "done")],
    )


FACTORIES = (sub_price, sub_order, sub_single, sub_approve, sub_approval)


def register(registry) -> None:
    for factory in FACTORIES:
        registry.register_definition(factory())
