"""Deadlines racing on PostgreSQL: two sweeps, or a sweep and a completion, at once."""

from datetime import timedelta

import pytest

from django_workflows import WorkflowDefinition, WorkflowStatus
from django_workflows.models import HumanTask, WorkflowEvent

from ..factories import UserFactory
from ..helpers import in_threads
from .test_deadlines import Approve

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def deadlines(engine):
    engine.registry.register_definition(
        WorkflowDefinition(name="deadlines", version="1", initial_step="a", steps={"a": Approve()})
    )
    return engine


def due(task, **deadlines):
    """Make the task's deadlines due now (what advance_time does, without its sweep)."""
    HumanTask.objects.filter(pk=task.pk).update(**deadlines)


def count(type_):
    return WorkflowEvent.objects.filter(type=type_).count()


@pytest.mark.parametrize("round_", range(5))
def test_two_sweeps_at_once_fire_a_reminder_once(deadlines, round_):
    task = deadlines.start_workflow("deadlines").human_tasks.get()
    due(task, remind_at=task.created_at - timedelta(minutes=1))

    results = in_threads(deadlines.run_due_timers, deadlines.run_due_timers)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert count("HumanTaskReminder") == 1
    assert HumanTask.objects.get(pk=task.pk).reminders_sent == 1


@pytest.mark.parametrize("round_", range(5))
def test_two_sweeps_at_once_escalate_once(deadlines, round_):
    task = deadlines.start_workflow("deadlines").human_tasks.get()
    due(task, escalate_at=task.created_at - timedelta(minutes=1))

    results = in_threads(deadlines.run_due_timers, deadlines.run_due_timers)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert count("HumanTaskEscalated") == 1
    task = HumanTask.objects.get(pk=task.pk)
    assert [g.name for g in task.candidate_groups.all()] == ["directors"]


@pytest.mark.parametrize("round_", range(5))
def test_a_completion_and_an_escalation_at_once(deadlines, round_):
    user = UserFactory()
    task = deadlines.start_workflow("deadlines").human_tasks.get()
    past = task.created_at - timedelta(minutes=1)
    due(task, escalate_at=past, remind_at=past)

    results = in_threads(
        deadlines.run_due_timers,
        lambda: deadlines.complete_task(task.pk, user.pk, {"ok": True}),
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    instance = deadlines.get_instance(task.instance_id)
    assert instance.status == WorkflowStatus.COMPLETED
    kinds = list(instance.events.values_list("type", flat=True))
    # The escalation fired before the completion, or not at all; never after it.
    assert kinds.count("HumanTaskEscalated") <= 1
    if "HumanTaskEscalated" in kinds:
        assert kinds.index("HumanTaskEscalated") < kinds.index("HumanTaskCompleted")
    assert deadlines.run_due_timers() == 0
