"""The state layer: migrations in sync, status choices, and the constraints the database enforces."""

import io

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction

from django_workflows import StepType, WorkflowStatus
from django_workflows.models import (
    DefinitionVersion,
    HumanTask,
    StepRun,
    StepRunStatus,
    StepTypeChoices,
    TaskStatus,
    WorkflowInstance,
)

pytestmark = pytest.mark.django_db

STATUS_CHOICES = [WorkflowStatus, StepRunStatus, StepTypeChoices, TaskStatus]


def test_migrations_match_the_models():
    out = io.StringIO()
    # --check exits non-zero (SystemExit) when a model change has no migration.
    call_command("makemigrations", "django_workflows", check=True, dry_run=True, stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.parametrize("choices", STATUS_CHOICES, ids=lambda c: c.__name__)
def test_every_choice_has_a_label(choices):
    assert len(choices) > 0
    for member in choices:
        label = str(member.label)
        assert label, member
        assert label != member.value  # a human label, not the stored value
        assert label[0].isupper()


def test_step_type_choices_match_the_step_types():
    assert set(StepTypeChoices.values) == {str(t) for t in StepType}


def test_status_fields_use_the_choices():
    assert WorkflowInstance._meta.get_field("status").choices == WorkflowStatus.choices
    assert StepRun._meta.get_field("status").choices == StepRunStatus.choices
    assert HumanTask._meta.get_field("status").choices == TaskStatus.choices


@pytest.fixture
def waiting(engine):
    """An expense instance waiting at its human task, built by the engine."""
    instance = engine.start_workflow("expense", initial_data={"amount": 10})
    assert instance.status == WorkflowStatus.WAITING
    return instance


def test_definition_name_and_version_are_unique(waiting):
    stored = waiting.definition
    assert (stored.name, stored.version) == ("expense", "1.0.0")

    with pytest.raises(IntegrityError), transaction.atomic():
        DefinitionVersion.objects.create(name="expense", version="1.0.0", graph={}, checksum="x")

    # Another version of the same name, or the same version of another name, is fine.
    DefinitionVersion.objects.create(name="expense", version="1.0.1", graph={}, checksum="x")
    DefinitionVersion.objects.create(name="other", version="1.0.0", graph={}, checksum="x")
    assert DefinitionVersion.objects.filter(name="expense").count() == 2


def test_one_open_human_task_per_step_run(waiting):
    task = HumanTask.objects.get(instance=waiting)
    assert task.status == TaskStatus.OPEN

    def another(status=TaskStatus.OPEN):
        return HumanTask.objects.create(
            instance=waiting,
            step_run=task.step_run,
            step_name=task.step_name,
            title="duplicate",
            status=status,
        )

    with pytest.raises(IntegrityError), transaction.atomic():
        another()
    assert HumanTask.objects.filter(step_run=task.step_run).count() == 1

    # Closed tasks do not count: a completed and a canceled one beside an open one are fine.
    another(TaskStatus.COMPLETED)
    another(TaskStatus.CANCELED)
    HumanTask.objects.filter(pk=task.pk).update(status=TaskStatus.COMPLETED)
    reopened = another()
    assert list(
        HumanTask.objects.filter(step_run=task.step_run, status=TaskStatus.OPEN).values_list(
            "pk", flat=True
        )
    ) == [reopened.pk]
    assert HumanTask.objects.filter(step_run=task.step_run).count() == 4


def test_open_tasks_of_different_step_runs_coexist(engine):
    first = engine.start_workflow("expense", initial_data={"amount": 1})
    second = engine.start_workflow("expense", initial_data={"amount": 2})

    assert HumanTask.objects.filter(status=TaskStatus.OPEN).count() == 2
    assert first.human_tasks.get().step_run_id != second.human_tasks.get().step_run_id


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (WorkflowInstance, "status"),
        (StepRun, "status"),
        (StepRun, "step_type"),
        (HumanTask, "status"),
    ],
    ids=["instance-status", "steprun-status", "steprun-type", "task-status"],
)
def test_the_database_refuses_an_invalid_status(waiting, model, field):
    rows = model.objects.filter(
        **({"pk": waiting.pk} if model is WorkflowInstance else {"instance": waiting})
    ).order_by("pk")
    before = list(rows.values_list(field, flat=True))
    assert before

    with pytest.raises(IntegrityError), transaction.atomic():
        rows.update(**{field: "bogus"})

    assert list(rows.values_list(field, flat=True)) == before
