"""N-of-M completions racing on PostgreSQL: the instance lock serializes them, so the step
is decided once and the step after it runs once."""

import pytest

from django_workflows import Edge, WorkflowDefinition, WorkflowStatus
from django_workflows.exceptions import TaskNotOpen
from django_workflows.models import HumanTask, StepRun, WorkflowEvent

from ..factories import UserFactory
from ..helpers import in_threads
from ..workflows import Record, calls
from .test_nofm import Review

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def started(engine, people, completion):
    engine.registry.register_definition(
        WorkflowDefinition(
            name="board",
            version="1",
            initial_step="review",
            steps={"review": Review(assignees=people, completion=completion), "sign": Record()},
            edges=[Edge("review", "sign")],
        )
    )
    instance = engine.start_workflow("board")
    return instance, list(HumanTask.objects.filter(instance=instance).order_by("slot"))


def completing(engine, task, user):
    return lambda: engine.complete_task(task.pk, user.pk, action="Approve")


@pytest.mark.parametrize("round_", range(5))
def test_the_last_two_of_two_at_once_advance_exactly_once(engine, round_):
    people = [UserFactory(), UserFactory()]
    instance, tasks = started(engine, people, "all")

    results = in_threads(*(completing(engine, t, u) for t, u in zip(tasks, people, strict=True)))

    assert not [r for r in results if isinstance(r, Exception)], results
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert calls == [("", "sign")]
    assert StepRun.objects.filter(instance=instance, step_name="sign").count() == 1
    assert sorted(r["user"] for r in instance.context["review"]) == sorted(p.pk for p in people)
    assert WorkflowEvent.objects.filter(instance=instance, type="WorkflowCompleted").count() == 1
    assert set(HumanTask.objects.filter(instance=instance).values_list("status", flat=True)) == {
        "completed"
    }


@pytest.mark.parametrize("round_", range(5))
def test_any_completions_at_once_one_decides_the_other_conflicts(engine, round_):
    people = [UserFactory(), UserFactory(), UserFactory()]
    instance, tasks = started(engine, people, "any")

    results = in_threads(*(completing(engine, t, u) for t, u in zip(tasks, people, strict=True)))

    wins = [r for r in results if not isinstance(r, Exception)]
    assert len(wins) == 1, results
    assert all(isinstance(r, TaskNotOpen) for r in results if isinstance(r, Exception)), results
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert calls == [("", "sign")]
    assert len(instance.context["review"]) == 1
    statuses = sorted(HumanTask.objects.filter(instance=instance).values_list("status", flat=True))
    assert statuses == ["canceled", "canceled", "completed"]
    assert WorkflowEvent.objects.filter(instance=instance, type="HumanTaskCanceled").count() == 2


@pytest.mark.parametrize("round_", range(3))
def test_two_of_three_with_three_at_once_decides_once(engine, round_):
    people = [UserFactory(), UserFactory(), UserFactory()]
    instance, tasks = started(engine, people, 2)

    results = in_threads(*(completing(engine, t, u) for t, u in zip(tasks, people, strict=True)))

    assert len([r for r in results if not isinstance(r, Exception)]) == 2, results
    assert len([r for r in results if isinstance(r, TaskNotOpen)]) == 1, results
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert calls == [("", "sign")]
    assert len(instance.context["review"]) == 2
