"""Sub-workflows on a real qcluster: the children's steps run on the workers, the
parent is joined there and moves on."""

import os

import pytest

from django_workflows import WorkflowStatus
from django_workflows.models import StepRun, WorkflowEvent

from ..processes import wait_status

pytestmark = pytest.mark.worker

LINES = [{"sku": s, "qty": q, "price": 2} for s, q in (("a", 1), ("b", 2), ("c", 3))]


def test_for_each_children_run_on_the_workers_and_the_parent_completes(q_engine, cluster):
    parent = q_engine.start_workflow("sub_order", initial_data={"lines": LINES, "currency": "EUR"})
    assert parent.status == WorkflowStatus.WAITING  # the children are the workers' work

    parent = wait_status(q_engine, parent, WorkflowStatus.COMPLETED)

    assert [r["total"] for r in parent.context["priced"]] == [2, 4, 6]
    assert parent.context["order_total"] == 12
    children = list(parent.children.order_by("parent_item"))
    assert [c.status for c in children] == ["completed"] * 3
    assert os.getpid() not in {c.context["pid"] for c in children}  # run by the workers
    assert StepRun.objects.filter(instance=parent, step_name="sum").count() == 1
    assert WorkflowEvent.objects.filter(instance=parent, type="SubWorkflowFinished").count() == 3


def test_a_child_failing_on_a_worker_fails_the_parent(q_engine, cluster):
    lines = [LINES[0], {"sku": "bad", "qty": 1, "price": 1, "fail": True}]
    parent = q_engine.start_workflow("sub_order", initial_data={"lines": lines})

    parent = wait_status(q_engine, parent, WorkflowStatus.FAILED)

    assert parent.failed_step == "price_lines"
    assert "cannot price bad" in parent.error
    assert parent.children.get(parent_item=1).status == WorkflowStatus.FAILED


def test_children_waiting_for_people_join_on_the_workers(q_engine, cluster):
    parent = q_engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y"]})
    first, second = parent.children.order_by("parent_item")
    q_engine.complete_human_task(first.pk, "approve", None, {"ok": True})
    q_engine.complete_human_task(second.pk, "approve", None, {"ok": False})

    parent = wait_status(q_engine, parent, WorkflowStatus.COMPLETED)

    assert parent.context["approve_lines"] == [True, False]
    assert parent.context["done"] is True
