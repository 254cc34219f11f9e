"""Instances with a full history, for the export and purge tests (tests/test_export.py,
tests/test_purge.py): built through the engine, then aged by moving ``finished_at``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from django_workflows import LocalExecutionEngine, WorkflowRegistry
from django_workflows.models import IdempotencyKey, WorkflowInstance
from testproject.testapp import subflow_workflows as sw

from . import workflows

#: A moment every aged instance finished before, and every fresh one after.
CUTOFF = timezone.now() - timedelta(days=30)


@pytest.fixture
def history_engine(bus):
    reg = WorkflowRegistry()
    reg.register_definition(workflows.expense_approval())
    reg.register_definition(workflows.timer())
    sw.register(reg)
    return LocalExecutionEngine(reg, event_bus=bus)


def full_expense(engine, starter, manager, *, approved=False, key="") -> WorkflowInstance:
    """An expense claim with a signal, an idempotency key, a comment on its task with a
    file, completed by ``manager`` (rejected: it ends COMPLETED; approved: FAILED)."""
    instance = engine.start_workflow(
        "expense", initial_data={"amount": 5}, started_by=starter, business_key=key
    )
    task = instance.human_tasks.get()
    engine.send_signal("nudge", {"n": 1}, instance_id=instance.pk, sent_by=starter)
    engine.add_comment(
        instance.pk,
        manager,
        "receipt attached",
        task_id=task.pk,
        attachment=ContentFile(b"receipt", name="receipt.txt"),
    )
    IdempotencyKey.objects.create(
        key=f"k-{instance.pk}", workflow_name="expense", instance=instance
    )
    engine.complete_human_task(
        instance_id=instance.pk,
        step_name="manager_approval",
        user_id=manager.pk,
        data={"approved": approved},
    )
    return WorkflowInstance.objects.get(pk=instance.pk)


def age(*instances: WorkflowInstance, days: int = 60) -> None:
    """Move the instances' ``finished_at`` ``days`` back."""
    when = timezone.now() - timedelta(days=days)
    WorkflowInstance.objects.filter(pk__in=[i.pk for i in instances]).update(finished_at=when)
