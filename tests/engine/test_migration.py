"""Moving active instances to a new definition version: plan, migrate, audit."""

import uuid

import pytest
from django.core.exceptions import ValidationError

from django_workflows import BaseHumanStep, BaseMachineStep, Edge, WorkflowDefinition
from django_workflows.engine import MigrationPlan
from django_workflows.models import HumanTask, StepRun, WorkflowEvent, WorkflowInstance

from ..factories import UserFactory
from ..helpers import QueueingEngine

pytestmark = pytest.mark.django_db


class Route(BaseMachineStep):
    def execute(self, context):
        context.set("routed", True)


class Pay(BaseMachineStep):
    def execute(self, context):
        context.set("paid", True)


class Notify(BaseMachineStep):  # new in 2.0.0
    def execute(self, context):
        context.set("notified", True)


class Approval(BaseHumanStep):
    title = "Approve the payment"


class ApprovalV2(BaseHumanStep):
    title = "Approve the payment (v2)"

    def get_summary(self, context):
        return f"{context.get('amount')} EUR"


def payment_v1(name: str = "payment") -> WorkflowDefinition:
    return WorkflowDefinition(
        name=name,
        version="1.0.0",
        initial_step="route",
        steps={
            "route": Route(),
            "approval": Approval(),
            "review": BaseHumanStep(title="Review"),
            "pay": Pay(),
        },
        edges=[
            Edge("route", "review", condition="context.get('kind') == 'review'"),
            Edge("route", "approval", condition="context.get('kind') != 'review'"),
            Edge("review", "pay"),
            Edge("approval", "pay"),
        ],
    )


def payment_v2(name: str = "payment") -> WorkflowDefinition:
    """Removes ``review`` and adds ``notify`` after ``pay``."""
    return WorkflowDefinition(
        name=name,
        version="2.0.0",
        initial_step="route",
        steps={"route": Route(), "approval": ApprovalV2(), "pay": Pay(), "notify": Notify()},
        edges=[Edge("route", "approval"), Edge("approval", "pay"), Edge("pay", "notify")],
    )


@pytest.fixture
def started(engine):
    engine.registry.register_definition(payment_v1())
    instances = [engine.start_workflow("payment", initial_data={"amount": n}) for n in (1, 2, 3)]
    reviewed = engine.start_workflow("payment", initial_data={"kind": "review"})
    engine.registry.register_definition(payment_v2())
    return instances, reviewed


def test_three_instances_move_to_a_version_with_a_new_step_and_run_it(engine, started):
    instances, reviewed = started
    reviewed_before = WorkflowInstance.objects.get(pk=reviewed.pk)

    plan = engine.plan_migration("payment", "1.0.0", "2.0.0")

    assert [v.instance_id for v in plan.movable] == [i.pk for i in instances], str(plan)
    [blocked] = plan.blocked
    assert blocked.instance_id == reviewed.pk
    assert blocked.reason == "step 'review' removed in 2.0.0 and not mapped"
    text = str(plan)
    for instance in instances:
        assert f"{instance.pk}: movable (at approval)" in text
    assert f"{reviewed.pk}: blocked: step 'review' removed in 2.0.0 and not mapped" in text
    assert str(reviewed.pk) in repr(plan)

    results = engine.migrate_instances(plan)

    assert [(r.instance_id, r.migrated) for r in results] == [
        *((i.pk, True) for i in instances),
        (reviewed.pk, False),
    ]
    for instance in instances:
        moved = engine.get_instance(instance.pk)
        assert moved.definition.version == "2.0.0"
        task = HumanTask.objects.get(instance=moved, status="open")
        assert (task.title, task.summary) == (
            "Approve the payment (v2)",
            f"{moved.context['amount']} EUR",
        )
        event = WorkflowEvent.objects.get(instance=moved, type="InstanceMigrated")
        assert event.payload == {
            "from_version": "1.0.0",
            "to_version": "2.0.0",
            "step_map": {},
            "moved": {"approval": "approval"},
        }
        done = engine.complete_task(task.pk, None, {})
        assert done.status == "completed"
        assert done.context["notified"] is True  # the step 2.0.0 added ran
        assert StepRun.objects.filter(instance=moved, step_name="notify").count() == 1
    untouched = WorkflowInstance.objects.get(pk=reviewed.pk)
    assert untouched.definition.version == "1.0.0"
    assert untouched.updated_at == reviewed_before.updated_at
    assert not WorkflowEvent.objects.filter(instance=reviewed, type="InstanceMigrated").exists()
    assert HumanTask.objects.get(instance=reviewed).step_name == "review"


def test_plan_writes_nothing(engine, started):
    counts = (WorkflowEvent.objects.count(), StepRun.objects.count(), HumanTask.objects.count())
    engine.plan_migration("payment", "1.0.0", "2.0.0")
    after = (WorkflowEvent.objects.count(), StepRun.objects.count(), HumanTask.objects.count())
    assert after == counts
    assert not WorkflowInstance.objects.filter(definition__version="2.0.0").exists()


def test_a_mapped_step_moves_its_task_and_history_says_so(engine, started):
    _, reviewed = started
    plan = engine.plan_migration(
        "payment", "1.0.0", "2.0.0", step_map={"review": "approval"}, instance_ids=[reviewed.pk]
    )
    assert [(v.instance_id, v.movable) for v in plan.instances] == [(reviewed.pk, True)]

    [result] = engine.migrate_instances(plan)

    assert result.migrated, result
    moved = engine.get_instance(reviewed.pk)
    assert moved.current_steps == ["approval"]
    assert StepRun.objects.get(instance=moved, status="waiting").step_name == "approval"
    task = HumanTask.objects.get(instance=moved)
    assert (task.step_name, task.title) == ("approval", "Approve the payment (v2)")
    event = WorkflowEvent.objects.get(instance=moved, type="InstanceMigrated")
    assert event.payload["step_map"] == {"review": "approval"}
    assert event.payload["moved"] == {"review": "approval"}
    done = engine.complete_human_task(moved.pk, "approval", None, {})
    assert done.status == "completed" and done.context["notified"] is True


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"step_map": {"nope": "approval"}}, "step_map", "payment 1.0.0 has no step 'nope'"),
        ({"step_map": {"review": "nope"}}, "step_map", "payment 2.0.0 has no step 'nope'"),
        ({"to_version": "3.0.0"}, "to_version", "has no version '3.0.0'"),
        ({"to_version": "1.0.0"}, "to_version", "already run"),
        ({"from_version": "0.1"}, "from_version", "has no version '0.1'"),
        ({"instance_ids": ["x"]}, "instance_ids", "not a list of instance ids"),
        ({"instance_ids": [uuid.uuid4(), "x1"]}, "instance_ids", "'x1' is no instance id"),
        ({"instance_ids": "x"}, "instance_ids", "not a list of instance ids"),
        ({"instance_ids": 5}, "instance_ids", "not a list of instance ids"),
        ({"name": "nope"}, "workflow", "no workflow named 'nope' is registered"),
    ],
)
def test_bad_arguments_are_refused_up_front(engine, started, kwargs, field, message):
    args = {"name": "payment", "from_version": "1.0.0", "to_version": "2.0.0", **kwargs}
    with pytest.raises(ValidationError) as caught:
        engine.plan_migration(
            args.pop("name"),
            args.pop("from_version"),
            args.pop("to_version"),
            **args,
        )
    assert message in " ".join(caught.value.message_dict[field])


def test_an_instance_that_changed_since_the_plan_is_skipped(engine, started):
    instances, _ = started
    plan = engine.plan_migration("payment", "1.0.0", "2.0.0", instance_ids=[instances[0].pk])
    engine.complete_human_task(instances[0].pk, "approval", None, {})  # completes it (1.0.0)

    [result] = engine.migrate_instances(plan)

    assert not result.migrated
    assert result.reason.startswith("it changed since the plan")
    instance = engine.get_instance(instances[0].pk)
    assert (instance.status, instance.definition.version) == ("completed", "1.0.0")
    assert "notified" not in instance.context


def test_an_unknown_id_is_reported_not_raised(engine, started):
    instances, _ = started
    other = "00000000-0000-0000-0000-000000000000"
    plan = engine.plan_migration("payment", "1.0.0", "2.0.0", instance_ids=[instances[0].pk, other])
    assert [str(v) for v in plan.blocked] == [
        f"{other}: blocked: not an active instance of payment 1.0.0"
    ]


def test_a_step_claimed_by_a_worker_is_not_migrated(wf_registry):
    wf_registry.register_definition(payment_v1())
    engine = QueueingEngine(wf_registry)
    instance = engine.start_workflow("payment")
    wf_registry.register_definition(payment_v2())
    (run_id,) = engine.queued
    claimed = engine.claim(run_id)
    assert claimed is not None

    plan = engine.plan_migration("payment", "1.0.0", "2.0.0")

    assert [str(v) for v in plan.instances] == [
        f"{instance.pk}: blocked: running step 'route' is claimed by a worker"
    ]
    assert engine.migrate_instances(plan)[0].reason == "running step 'route' is claimed by a worker"
    engine.finish(claimed, {})
    # Once the worker is done, the instance waits at the approval and can move.
    plan = engine.plan_migration("payment", "1.0.0", "2.0.0")
    assert [r.migrated for r in engine.migrate_instances(plan)] == [True]


def test_a_queued_machine_step_moves_with_its_instance(wf_registry):
    wf_registry.register_definition(payment_v1())
    engine = QueueingEngine(wf_registry)
    instance = engine.start_workflow("payment")
    wf_registry.register_definition(payment_v2())
    (run_id,) = engine.queued

    [result] = engine.migrate_instances(engine.plan_migration("payment", "1.0.0", "2.0.0"))

    assert result.migrated
    engine.process_run(run_id)  # the queued message runs the step on 2.0.0
    moved = engine.get_instance(instance.pk)
    assert moved.definition.version == "2.0.0" and moved.current_steps == ["approval"]


def test_a_failed_instance_moves_and_retries_on_the_new_version(engine):
    class Broken(BaseMachineStep):
        def execute(self, context):
            raise RuntimeError("bug")

    engine.registry.register_definition(
        WorkflowDefinition(
            name="fix",
            version="1",
            initial_step="a",
            steps={"a": Broken(), "b": Pay()},
            edges=[Edge("a", "b")],
        )
    )
    engine.registry.register_definition(
        WorkflowDefinition(
            name="fix",
            version="2",
            initial_step="a2",
            steps={"a2": Route(), "b": Pay()},
            edges=[Edge("a2", "b")],
        )
    )
    instance = engine.start_workflow("fix", version="1")
    assert instance.status == "failed"

    plan = engine.plan_migration("fix", "1", "2", step_map={"a": "a2"})
    # The plan says where it failed (it has no active step to show).
    assert plan.instances[0].positions == ("a",)
    assert f"{instance.pk}: movable (at a)" in str(plan)
    [result] = engine.migrate_instances(plan)

    assert result.migrated, result
    moved = engine.get_instance(instance.pk)
    assert (moved.status, moved.failed_step) == ("failed", "a2")
    done = engine.retry(moved.pk)
    assert done.status == "completed" and done.context == {"routed": True, "paid": True}


def test_a_step_of_another_type_blocks(engine, started):
    plan = engine.plan_migration("payment", "1.0.0", "2.0.0", step_map={"approval": "pay"})
    reasons = {v.reason for v in plan.instances}
    assert "step 'approval' is a human step but 'pay' is a machine step in 2.0.0" in reasons
    assert isinstance(plan, MigrationPlan) and not plan.movable


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_async_twins(wf_registry, bus):
    from asgiref.sync import sync_to_async
    from django.db import connections

    from django_workflows import LocalExecutionEngine

    engine = LocalExecutionEngine(wf_registry, event_bus=bus)
    engine.registry.register_definition(payment_v1())
    instance = await engine.astart_workflow("payment")
    engine.registry.register_definition(payment_v2())
    plan = await engine.aplan_migration("payment", "1.0.0", "2.0.0")
    [result] = await engine.amigrate_instances(plan)
    assert result.migrated and result.instance_id == instance.pk
    moved = await WorkflowInstance.objects.select_related("definition").aget(pk=instance.pk)
    assert moved.definition.version == "2.0.0"
    await sync_to_async(UserFactory)()  # the factories still work after the move
    await sync_to_async(connections.close_all)()


class Join(BaseMachineStep):
    def execute(self, context):
        context.set("joined", True)


def forked(version: str, right: str, *, left_joins: bool = True) -> WorkflowDefinition:
    """start -> left and right (people), both -> join; ``right`` names the right step."""
    edges = [Edge("start", "left"), Edge("start", right), Edge(right, "join")]
    steps = {"start": Route(), "left": BaseHumanStep(), right: BaseHumanStep(), "join": Join()}
    if left_joins:
        edges.append(Edge("left", "join"))
    else:
        steps["after_left"] = Pay()
        edges.append(Edge("left", "after_left"))
    return WorkflowDefinition(
        name="fork", version=version, initial_step="start", steps=steps, edges=edges
    )


@pytest.fixture
def half_joined(engine):
    """fork 1: left is done (its token waits at the join), right waits for a person."""
    engine.registry.register_definition(forked("1", "right"))
    instance = engine.start_workflow("fork", version="1")
    engine.complete_human_task(instance.pk, "left", None, {})
    assert engine.get_instance(instance.pk).tokens == {"join": {"left": True}}
    return instance


def test_a_join_token_moves_with_its_renamed_steps(engine, half_joined):
    engine.registry.register_definition(forked("2", "right2"))
    plan = engine.plan_migration("fork", "1", "2", step_map={"right": "right2"})
    [result] = engine.migrate_instances(plan)
    assert result.migrated, result
    moved = engine.get_instance(half_joined.pk)
    assert (moved.current_steps, moved.tokens) == (["right2"], {"join": {"left": True}})
    done = engine.complete_human_task(moved.pk, "right2", None, {})
    assert done.status == "completed" and done.context["joined"] is True


def test_a_live_join_token_the_new_graph_would_lose_blocks(engine, half_joined):
    engine.registry.register_definition(forked("2", "right", left_joins=False))
    plan = engine.plan_migration("fork", "1", "2")
    assert [v.reason for v in plan.instances] == [
        "join 'join' holds a live token from 'left', which does not lead to a join 'join' in 2"
    ]
