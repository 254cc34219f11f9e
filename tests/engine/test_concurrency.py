"""Races on PostgreSQL: the instance row lock serializes transitions of one instance."""

import threading

import pytest

from django_workflows import (
    BaseMachineStep,
    Edge,
    TaskNotOpen,
    WorkflowDefinition,
    WorkflowStatus,
)
from django_workflows.models import HumanTask, StepRun

from ..factories import GroupFactory, UserFactory
from ..helpers import TIMEOUT, in_threads
from ..helpers import QueueingEngine as BaseQueueingEngine

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class QueueingEngine(BaseQueueingEngine):
    chain_steps = False  # every run goes through the "queue", one process_run each


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_task_completion_one_wins(engine, round_):
    manager = UserFactory(groups=[GroupFactory(name="managers")])
    instance = engine.start_workflow("expense", initial_data={"amount": 5})

    def complete(approved):
        return lambda: engine.complete_human_task(
            instance.id, "manager_approval", manager.pk, {"approved": approved}
        )

    results = in_threads(complete(False), complete(False))

    wins = [r for r in results if not isinstance(r, Exception)]
    conflicts = [r for r in results if isinstance(r, TaskNotOpen)]
    assert (len(wins), len(conflicts)) == (1, 1), results
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert HumanTask.objects.get(instance=instance).status == "completed"
    assert instance.events.filter(type="HumanTaskCompleted").count() == 1
    assert StepRun.objects.filter(instance=instance, step_name="reject").count() == 1


class Noop(BaseMachineStep):
    def execute(self, context):
        pass


class Meet(BaseMachineStep):
    """Both branches wait here until both are executing, so they commit at the same moment."""

    barrier: threading.Barrier

    def execute(self, context):
        self.barrier.wait(TIMEOUT)
        context.set(context.step_name, True)


@pytest.mark.parametrize("round_", range(5))
def test_parallel_branches_finishing_together_join_runs_once(wf_registry, round_):
    Meet.barrier = threading.Barrier(2)
    wf_registry.register_definition(
        WorkflowDefinition(
            name="race",
            version="1",
            initial_step="start",
            steps={"start": Noop(), "left": Meet(), "right": Meet(), "join": Meet()},
            edges=[
                Edge("start", "left"),
                Edge("start", "right"),
                Edge("left", "join"),
                Edge("right", "join"),
            ],
        )
    )
    engine = QueueingEngine(wf_registry)
    instance = engine.start_workflow("race")
    (start_run,) = engine.queued
    branches = engine.process_run(start_run)
    assert len(branches) == 2

    results = in_threads(*(lambda r=r: engine.process_run(r) for r in branches))

    follow_ups = [run for result in results for run in result]
    assert len(follow_ups) == 1, results  # exactly one of the two activated the join
    assert StepRun.objects.filter(instance=instance, step_name="join").count() == 1
    Meet.barrier = threading.Barrier(1)
    assert engine.process_run(follow_ups[0]) == []
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"left": True, "right": True, "join": True}


def test_duplicate_delivery_runs_a_step_once(wf_registry):
    executions = []
    entered, release = threading.Event(), threading.Event()

    class Slow(BaseMachineStep):
        def execute(self, context):
            executions.append(context.attempt)
            entered.set()
            release.wait(TIMEOUT)

    wf_registry.register_definition(
        WorkflowDefinition(name="dup", version="1", initial_step="s", steps={"s": Slow()})
    )
    engine = QueueingEngine(wf_registry)
    instance = engine.start_workflow("dup")
    (run_id,) = engine.queued

    def second_delivery():
        entered.wait(TIMEOUT)  # the first delivery is executing the step now
        try:
            return engine.process_run(run_id)
        finally:
            release.set()

    results = in_threads(lambda: engine.process_run(run_id), second_delivery)

    assert results == [[], []]
    assert executions == [1]
    assert engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_idempotent_starts_start_one_instance(engine, round_):
    from django_workflows.models import WorkflowInstance

    user = UserFactory()

    def start():
        return engine.get_or_start_workflow(
            "notifications", started_by=user, idempotency_key=f"key-{round_}"
        )

    results = in_threads(start, start, start)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(created for _, created in results) == [False, False, True]
    assert len({instance.pk for instance, _ in results}) == 1
    assert WorkflowInstance.objects.count() == 1
