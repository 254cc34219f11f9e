"""Bad input from a workflow's callers: a clear error, nothing lost, nothing run twice.

An assignee taken from client data that names no user, and a loop whose exit
condition never holds. On SQLite and PostgreSQL.
"""

import pytest
from django.test import override_settings

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    WorkflowDefinition,
    WorkflowStatus,
)
from django_workflows.exceptions import InvalidAssignee
from django_workflows.models import HumanTask, StepRun, TaskStatus

from ..helpers import QueueingEngine

BAD_ASSIGNEES = [424242, "abc", [1], True, {"id": 1}, 2**70, ""]

prepared: list[str] = []


class Prepare(BaseMachineStep):
    def execute(self, context):
        prepared.append(context.get("tag", ""))
        context.set("prepared", True)


class Approve(BaseHumanStep):
    """Assigned to whoever ``context['approver']`` names (client data)."""

    title = "Approve"

    def get_assignee(self, context):
        return context.get("approver")


class Review(BaseHumanStep):
    title = "Review"
    actions = {"Done": {"reviewed": True}}


def definitions():
    yield WorkflowDefinition(
        name="assigned_after_a_step",
        version="1",
        initial_step="prepare",
        steps={"prepare": Prepare(), "approve": Approve()},
        edges=[Edge("prepare", "approve")],
    )
    yield WorkflowDefinition(
        name="assigned_first", version="1", initial_step="approve", steps={"approve": Approve()}
    )
    yield WorkflowDefinition(
        name="assigned_after_a_task",
        version="1",
        initial_step="review",
        steps={"review": Review(), "approve": Approve()},
        edges=[Edge("review", "approve")],
    )
    yield WorkflowDefinition(
        name="endless",
        version="1",
        initial_step="poll",
        steps={"poll": Prepare(), "check": Prepare(), "done": Prepare()},
        edges=[
            Edge("poll", "check"),
            Edge("check", "done", condition="context.get('ready') == True"),  # never ready
            Edge("check", "poll", condition="context.get('ready') != True"),
        ],
    )


@pytest.fixture(autouse=True)
def _clear():
    prepared.clear()


@pytest.fixture
def bad_engine(engine):
    for definition in definitions():
        engine.registry.register_definition(definition)
    return engine


@pytest.mark.django_db
@pytest.mark.parametrize("approver", BAD_ASSIGNEES)
def test_a_bad_assignee_after_a_machine_step_fails_the_instance_once(bad_engine, approver):
    """The step ran once; the instance fails naming the assignee; nothing runs again."""
    instance = bad_engine.start_workflow(
        "assigned_after_a_step", initial_data={"approver": approver, "tag": "x"}
    )
    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "prepare"
    assert instance.error.startswith("InvalidAssignee: human step 'approve': its assignee ")
    assert repr(approver) in instance.error
    assert not HumanTask.objects.filter(instance=instance).exists()
    assert prepared == ["x"]
    # The sweep finds nothing to re-run: no lease left behind, no queued run.
    assert bad_engine.run_due_timers() == 0
    assert prepared == ["x"]
    assert not StepRun.objects.filter(instance=instance, status__in=["running", "queued"]).exists()


@pytest.mark.django_db
def test_a_bad_assignee_in_a_worker_transition_leaves_no_lease_to_expire(wf_registry):
    """With a worker engine the step's outcome commits with the failure: no lease
    expires later, so the sweep never re-runs the step (today's bug)."""
    engine = QueueingEngine(wf_registry)
    for definition in definitions():
        wf_registry.register_definition(definition)
    instance = engine.start_workflow("assigned_after_a_step", initial_data={"approver": 424242})
    (run_id,) = engine.take()
    assert engine.process_run(run_id) == []
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.FAILED
    assert "424242" in instance.error
    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.lease_token) == ("failed", None)
    assert engine.recover_expired_leases() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("approver", BAD_ASSIGNEES)
def test_a_bad_assignee_in_the_start_data_is_refused_and_nothing_starts(bad_engine, approver):
    with pytest.raises(InvalidAssignee, match="human step 'approve': its assignee"):
        bad_engine.start_workflow("assigned_first", initial_data={"approver": approver})
    assert not HumanTask.objects.exists()
    assert not StepRun.objects.exists()


@pytest.mark.django_db
def test_a_bad_assignee_in_a_task_completion_is_refused_and_the_task_stays_open(bad_engine, staff):
    instance = bad_engine.start_workflow("assigned_after_a_task")
    task = instance.human_tasks.get()
    with pytest.raises(InvalidAssignee, match="424242"):
        bad_engine.complete_task(task.pk, staff, {"approver": 424242}, action="Done")
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN
    instance = bad_engine.get_instance(instance.id)
    assert (instance.status, instance.context) == (WorkflowStatus.WAITING, {})

    # A user who exists: it goes on, assigned to them.
    instance = bad_engine.complete_task(task.pk, staff, {"approver": staff.pk}, action="Done")
    assert instance.human_tasks.get(step_name="approve").assignee == staff


@pytest.mark.django_db
def test_a_good_assignee_by_pk_or_object_is_assigned(bad_engine, user):
    for approver in (user.pk, str(user.pk)):
        instance = bad_engine.start_workflow("assigned_first", initial_data={"approver": approver})
        assert instance.human_tasks.get().assignee_id == user.pk


@pytest.mark.django_db
def test_a_loop_that_never_exits_fails_naming_the_loop(bad_engine):
    with override_settings(DJANGO_WORKFLOWS={"MAX_STEP_RUNS": 50}):
        instance = bad_engine.start_workflow("endless")
    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "check"
    assert instance.error == (
        "LoopLimitExceeded: the loop 'check' -> 'poll' went round until the instance had 50 "
        "step runs (MAX_STEP_RUNS is 50): its exit condition never held"
    )
    assert StepRun.objects.filter(instance=instance).count() == 50
    assert len(prepared) == 50


@pytest.mark.django_db
def test_a_loop_under_the_limit_is_not_bounded(bad_engine):
    """The default is far above a normal rework loop; None turns the bound off."""
    with override_settings(DJANGO_WORKFLOWS={"MAX_STEP_RUNS": None}):
        instance = bad_engine.start_workflow("assigned_after_a_step", initial_data={})
    assert instance.status == WorkflowStatus.WAITING
