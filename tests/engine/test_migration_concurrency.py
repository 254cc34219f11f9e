"""Migration races on PostgreSQL: a worker finishing a step, a user completing a task."""

import threading

import pytest

from django_workflows import StepNotFound, TaskNotOpen, WorkflowStatus
from django_workflows.models import HumanTask, StepRun, WorkflowEvent

from ..helpers import TIMEOUT, QueueingEngine, in_threads
from .test_migration import Route, payment_v1, payment_v2

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class Workers(QueueingEngine):
    chain_steps = False  # each run goes through the "queue": the test plays the worker


@pytest.mark.parametrize("round_", range(5))
def test_migrating_while_a_user_completes_the_task_one_wins(wf_registry, round_):
    wf_registry.register_definition(payment_v1())
    engine = Workers(wf_registry)
    instance = engine.start_workflow("payment", initial_data={"kind": "review"})
    engine.process_run(engine.queued.pop())  # route: now waiting at review
    wf_registry.register_definition(payment_v2())
    plan = engine.plan_migration("payment", "1.0.0", "2.0.0", step_map={"review": "approval"})
    assert plan.instances[0].movable, str(plan)

    migrate = lambda: engine.migrate_instances(plan)[0]  # noqa: E731
    complete = lambda: engine.complete_human_task(instance.pk, "review", None, {})  # noqa: E731
    migrated, completed = in_threads(migrate, complete)

    after = engine.get_instance(instance.pk)
    assert not isinstance(migrated, Exception), migrated
    if migrated.migrated:  # the migration won: the user's task is no longer "review"
        # Either its step is gone from the new version, or (locked after) its task moved.
        assert isinstance(completed, StepNotFound | TaskNotOpen), completed
        assert "review" in str(completed)
        assert (after.definition.version, after.status) == ("2.0.0", WorkflowStatus.WAITING)
        assert after.current_steps == ["approval"]
        assert HumanTask.objects.get(instance=after, status="open").step_name == "approval"
        assert not StepRun.objects.filter(instance=after, step_name="pay").exists()
    else:  # the user won: the plan is stale
        assert not isinstance(completed, Exception), completed
        assert migrated.reason.startswith("it changed since the plan"), migrated
        assert after.definition.version == "1.0.0" and after.current_steps == ["pay"]
        assert HumanTask.objects.get(instance=after).status == "completed"
        assert StepRun.objects.filter(instance=after, step_name="pay").count() == 1
    assert WorkflowEvent.objects.filter(instance=after, type="InstanceMigrated").count() == int(
        migrated.migrated
    )
    assert WorkflowEvent.objects.filter(instance=after, type="HumanTaskCompleted").count() == int(
        not migrated.migrated
    )


@pytest.mark.parametrize("round_", range(5))
def test_migrating_while_a_worker_runs_a_step_never_moves_it_under_its_feet(wf_registry, round_):
    wf_registry.register_definition(payment_v1())
    engine = Workers(wf_registry)
    instance = engine.start_workflow("payment")
    (run_id,) = engine.queued
    wf_registry.register_definition(payment_v2())
    plan = engine.plan_migration("payment", "1.0.0", "2.0.0")  # route is queued: movable
    assert plan.instances[0].movable, str(plan)

    worker = lambda: engine.process_run(run_id)  # noqa: E731  claim, execute, finish
    migrated, worked = in_threads(lambda: engine.migrate_instances(plan)[0], worker)

    assert not isinstance(worked, Exception), worked
    assert not isinstance(migrated, Exception), migrated
    after = engine.get_instance(instance.pk)
    # The step ran once, on whichever version the instance had when it was claimed.
    [route] = StepRun.objects.filter(instance=after, step_name="route")
    assert (route.status, route.attempt) == ("completed", 1)
    assert (after.status, after.current_steps) == (WorkflowStatus.WAITING, ["approval"])
    assert HumanTask.objects.filter(instance=after, status="open").count() == 1
    if migrated.migrated:  # moved while queued; the worker then claimed it on 2.0.0
        assert after.definition.version == "2.0.0"
    else:  # the worker claimed first (or was writing the run): nothing moved
        assert migrated.reason.startswith(
            ("it changed since the plan", "a worker is writing one of its steps right now")
        ), migrated
        assert after.definition.version == "1.0.0"


def test_a_step_claimed_after_the_plan_is_skipped_and_finishes_on_its_version(wf_registry):
    entered, release = threading.Event(), threading.Event()

    class Slow(Route):
        def execute(self, context):
            entered.set()
            assert release.wait(TIMEOUT)
            super().execute(context)

    v1 = payment_v1()
    v1.steps["route"] = Slow()
    wf_registry.register_definition(v1)
    engine = Workers(wf_registry)
    instance = engine.start_workflow("payment")
    (run_id,) = engine.queued
    wf_registry.register_definition(payment_v2())
    plan = engine.plan_migration("payment", "1.0.0", "2.0.0")

    def worker():
        return engine.process_run(run_id)

    def migrate_while_executing():
        assert entered.wait(TIMEOUT)  # the worker holds the run now
        try:
            return engine.migrate_instances(plan)[0]
        finally:
            release.set()

    worked, migrated = in_threads(worker, migrate_while_executing)

    assert not isinstance(worked, Exception), worked
    assert not migrated.migrated
    assert migrated.reason == (
        "it changed since the plan (running step 'route' is claimed by a worker)"
    )
    after = engine.get_instance(instance.pk)
    assert after.definition.version == "1.0.0"
    assert (after.status, after.current_steps, after.context) == (
        WorkflowStatus.WAITING,
        ["approval"],
        {"routed": True},
    )
    # Planned again, it moves now.
    [result] = engine.migrate_instances(engine.plan_migration("payment", "1.0.0", "2.0.0"))
    assert result.migrated
