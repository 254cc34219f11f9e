"""A timeout edge racing a completion on PostgreSQL: exactly one of them wins."""

from datetime import timedelta

import pytest
from django.db.models.functions import Now

from django_workflows import TaskNotOpen, WorkflowStatus
from django_workflows.models import StepRun

from ..factories import UserFactory
from ..helpers import in_threads
from .test_boundary import definitions

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def engine(engine):
    for definition in definitions():
        engine.registry.register_definition(definition)
    return engine


@pytest.mark.parametrize("round_", range(6))
def test_a_completion_and_a_timeout_at_once(engine, round_):
    user = UserFactory(is_superuser=True)
    instance = engine.start_workflow("approval")
    task = instance.human_tasks.get()
    StepRun.objects.filter(instance=instance).update(timeout_at=Now() - timedelta(minutes=1))

    results = in_threads(
        engine.run_due_timers,
        lambda: engine.complete_task(task.pk, user.pk, {"approved": True}),
    )

    sweep, completion = results
    assert not isinstance(sweep, Exception), sweep
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    kinds = list(instance.events.values_list("type", flat=True))
    if isinstance(completion, Exception):  # the timeout won
        assert isinstance(completion, TaskNotOpen), completion
        assert instance.context == {"approved": False}
        assert kinds.count("StepTimedOut") == 1
        assert "HumanTaskCompleted" not in kinds
    else:  # the completion won: the timeout did nothing
        assert instance.context == {"approved": True, "shipped": True}
        assert "StepTimedOut" not in kinds
    assert engine.run_due_timers() == 0


@pytest.mark.parametrize("round_", range(3))
def test_two_sweeps_fire_a_timeout_once(engine, round_):
    instance = engine.start_workflow("approval")
    StepRun.objects.filter(instance=instance).update(timeout_at=Now() - timedelta(minutes=1))

    results = in_threads(engine.run_due_timers, engine.run_due_timers)

    assert not [r for r in results if isinstance(r, Exception)], results
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.events.filter(type="StepTimedOut").count() == 1
    assert instance.step_runs.filter(step_name="auto_reject").count() == 1
