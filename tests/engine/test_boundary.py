"""Boundary edges: an error edge taken when a machine step fails for good, a timeout
edge fired by the sweep while a step waits."""

from datetime import timedelta

import pytest

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    DefinitionError,
    Edge,
    LocalExecutionEngine,
    ParallelGateway,
    RetryPolicy,
    TaskNotOpen,
    TimerStep,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.models import HumanTask, StepRun, StepRunStatus, TaskStatus
from django_workflows.testing import InProcessWorker, advance_time

from ..factories import UserFactory

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


class Charge(BaseMachineStep):
    retry = RetryPolicy(max_attempts=2, backoff=0)

    def execute(self, context):
        if context.get("declined"):
            raise RuntimeError("card declined")
        context.set("charged", True)

    def on_failure(self, context, error):
        # Runs before the error edge is taken.
        context.set("saw_error_key", "error" in context)


class Notify(BaseMachineStep):
    def execute(self, context):
        context.set("notified", dict(context.get("error") or {}))


class Ship(BaseMachineStep):
    def execute(self, context):
        context.set("shipped", True)


class Approval(BaseHumanStep):
    title = "Approve"
    fields = ("approved",)


class AutoReject(BaseMachineStep):
    def execute(self, context):
        context.set("approved", False)


def definitions():
    yield WorkflowDefinition(
        name="charge",
        version="1",
        initial_step="charge",
        steps={"charge": Charge(), "notify_support": Notify(), "ship": Ship()},
        edges=[Edge("charge", "ship"), Edge("charge", "notify_support", on="error")],
    )
    yield WorkflowDefinition(
        name="approval",
        version="1",
        initial_step="approval",
        steps={"approval": Approval(), "auto_reject": AutoReject(), "ship": Ship()},
        edges=[
            Edge("approval", "ship"),
            Edge("approval", "auto_reject", on="timeout", after=3 * DAY),
        ],
    )
    yield WorkflowDefinition(
        name="timer",
        version="1",
        initial_step="wait",
        steps={"wait": TimerStep(duration=10 * DAY), "late": Ship()},
        edges=[Edge("wait", "late", on="timeout", after=DAY)],
    )


@pytest.fixture(params=["local", "worker"])
def engine(request):
    reg = WorkflowRegistry()
    for definition in definitions():
        reg.register_definition(definition)
    return LocalExecutionEngine(reg) if request.param == "local" else InProcessWorker(reg)


def run(engine, name, **data):
    instance = engine.start_workflow(name, initial_data=data)
    if isinstance(engine, InProcessWorker):
        engine.run()
    return engine.get_instance(instance.id)


# -- error edges --------------------------------------------------------------------


def test_a_step_that_fails_for_good_takes_its_error_edge(engine):
    instance = run(engine, "charge", declined=True)
    assert instance.status == WorkflowStatus.COMPLETED
    error = {"step": "charge", "type": "RuntimeError", "message": "card declined", "attempt": 2}
    assert instance.context["error"] == error
    assert instance.context["notified"] == error
    assert instance.context["saw_error_key"] is False  # on_failure ran first
    assert "shipped" not in instance.context
    runs = dict(StepRun.objects.filter(instance=instance).values_list("step_name", "status"))
    assert runs == {"charge": StepRunStatus.FAILED, "notify_support": StepRunStatus.COMPLETED}
    events = [
        (e.type, e.step_name, e.payload.get("status"))
        for e in instance.events.exclude(type="WorkflowStarted")
    ]
    assert events == [
        ("StepExecuted", "charge", "retrying"),
        ("StepExecuted", "charge", "failed"),
        ("StepExecuted", "notify_support", "completed"),
        ("WorkflowCompleted", "", None),
    ]


def test_a_step_that_succeeds_ignores_its_error_edge(engine):
    instance = run(engine, "charge")
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"charged": True, "shipped": True}


def test_the_crash_limit_takes_the_error_edge(engine, settings):
    if not isinstance(engine, InProcessWorker):
        pytest.skip("the local engine runs the step at once")
    settings.DJANGO_WORKFLOWS = {"CRASH_LIMIT": 0}
    instance = engine.start_workflow("charge")
    run_ = StepRun.objects.get(instance=instance)
    assert engine.claim(run_.pk) is not None  # the worker claims it, then dies
    StepRun.objects.filter(pk=run_.pk).update(lease_expires_at=run_.created_at)
    engine.run_due_timers()
    engine.run()
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["error"]["type"] == "StepCrashed"
    assert instance.context["saw_error_key"] is False


# -- timeout edges --------------------------------------------------------------------


def test_waiting_arms_the_timeout_and_the_sweep_fires_it(engine):
    instance = run(engine, "approval")
    task = instance.human_tasks.get()
    waiting = StepRun.objects.get(instance=instance, step_name="approval")
    assert waiting.timeout_at - waiting.created_at == pytest.approx(3 * DAY, abs=timedelta(hours=1))

    assert advance_time(2 * DAY, engine) == 0
    assert advance_time(DAY + timedelta(minutes=1), engine) == 1
    if isinstance(engine, InProcessWorker):
        engine.run()

    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"approved": False}
    task.refresh_from_db()
    assert (task.status, task.close_reason) == (TaskStatus.CANCELED, "timed out")
    waiting.refresh_from_db()
    assert waiting.status == StepRunStatus.CANCELED
    timed_out = instance.events.get(type="StepTimedOut")
    assert timed_out.step_name == "approval"
    assert timed_out.payload["after_seconds"] == 3 * DAY.total_seconds()
    assert timed_out.payload["target"] == "auto_reject"
    canceled = instance.events.get(type="HumanTaskCanceled")
    assert canceled.payload == {**canceled.payload, "task_id": task.pk, "reason": "timed out"}
    # A completion after the timeout is a clear conflict.
    with pytest.raises(TaskNotOpen):
        engine.complete_task(task.pk, UserFactory(is_superuser=True).pk, {"approved": True})


def test_completing_the_step_disarms_its_timeout(engine):
    instance = run(engine, "approval")
    task = instance.human_tasks.get()
    engine.complete_task(task.pk, UserFactory(is_superuser=True).pk, {"approved": True})
    if isinstance(engine, InProcessWorker):
        engine.run()
    assert advance_time(4 * DAY, engine) == 0
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"approved": True, "shipped": True}
    assert not instance.events.filter(type="StepTimedOut").exists()


def test_a_timer_guarded_by_a_timeout(engine):
    instance = run(engine, "timer")
    advance_time(DAY, engine)
    if isinstance(engine, InProcessWorker):
        engine.run()
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"shipped": True}
    assert StepRun.objects.get(instance=instance, step_name="wait").status == "canceled"


def test_a_canceled_instance_times_out_nothing(engine):
    instance = run(engine, "approval")
    engine.cancel_workflow(instance_id=instance.id, reason="no")
    assert advance_time(4 * DAY, engine) == 0
    assert HumanTask.objects.get(instance=instance).status == TaskStatus.CANCELED


# -- paths that merge again: boundary edges carry dead tokens ---------------------------


class Done(BaseMachineStep):
    def execute(self, context):
        context.set("done", True)


@pytest.fixture
def merging(engine):
    engine.registry.register_definition(
        WorkflowDefinition(
            name="merge",
            version="1",
            initial_step="charge",
            steps={"charge": Charge(), "ship": Ship(), "notify": Notify(), "done": Done()},
            edges=[
                Edge("charge", "ship"),
                Edge("charge", "notify", on="error"),
                Edge("ship", "done"),
                Edge("notify", "done"),
            ],
        )
    )
    engine.registry.register_definition(
        WorkflowDefinition(
            name="merge_timeout",
            version="1",
            initial_step="approval",
            steps={"approval": Approval(), "ship": Ship(), "auto": AutoReject(), "done": Done()},
            edges=[
                Edge("approval", "ship"),
                Edge("approval", "auto", on="timeout", after=DAY),
                Edge("ship", "done"),
                Edge("auto", "done"),
            ],
        )
    )
    engine.registry.register_definition(
        WorkflowDefinition(
            name="branches",
            version="1",
            initial_step="start",
            steps={
                "start": ParallelGateway(),
                "charge": Charge(),
                "pack": Ship(),
                "join": Done(),
                "notify": Notify(),
            },
            edges=[
                Edge("start", "charge"),
                Edge("start", "pack"),
                Edge("charge", "join"),
                Edge("pack", "join"),
                Edge("charge", "notify", on="error"),
            ],
        )
    )
    return engine


@pytest.mark.parametrize("declined", [False, True])
def test_a_join_after_an_error_edge_runs_either_way(merging, declined):
    instance = run(merging, "merge", declined=declined)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["done"] is True
    assert ("notified" in instance.context) is declined
    assert ("shipped" in instance.context) is not declined
    assert instance.step_runs.filter(step_name="done").count() == 1


@pytest.mark.parametrize("times_out", [False, True])
def test_a_join_after_a_timeout_edge_runs_either_way(merging, times_out):
    instance = run(merging, "merge_timeout")
    if times_out:
        advance_time(2 * DAY, merging)
    else:
        task = instance.human_tasks.get()
        merging.complete_task(task.pk, UserFactory(is_superuser=True).pk, {"approved": True})
    if isinstance(merging, InProcessWorker):
        merging.run()
    instance = merging.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["done"] is True
    assert instance.context["approved"] is not times_out


def test_a_failed_branch_with_an_error_edge_is_a_dead_branch_for_the_join(merging):
    instance = run(merging, "branches", declined=True)
    assert instance.status == WorkflowStatus.COMPLETED
    # The join ran on the live branch (pack); the error path ended on its own.
    assert instance.context["done"] is True
    assert instance.context["shipped"] is True
    assert instance.context["notified"]["step"] == "charge"


# -- validation ------------------------------------------------------------------------


def check(*edges, steps=None):
    steps = steps or {
        "charge": Charge(),
        "approval": Approval(),
        "a": Ship(),
        "b": Ship(),
        "gate": TimerStep(duration=DAY),
    }
    edges = [Edge("charge", "approval"), Edge("approval", "a"), Edge("a", "gate"), *edges]
    WorkflowDefinition(
        name="x", version="1", initial_step="charge", steps=steps, edges=edges
    ).validate()


@pytest.mark.parametrize(
    ("edge", "message"),
    [
        (Edge("approval", "b", on="error"), "cannot fail"),
        (Edge("charge", "b", on="timeout", after=DAY), "does not wait"),
        (Edge("approval", "b", on="timeout"), "needs after= a positive timedelta"),
        (Edge("approval", "b", on="timeout", after=-DAY), "needs after= a positive timedelta"),
        (Edge("charge", "b", on="error", after=DAY), "takes no after="),
        (Edge("charge", "b", after=DAY), "is no timeout edge"),
        (Edge("charge", "b", on="crash"), "on must be one of error, timeout"),
        (Edge("charge", "b", "context.get('x')", on="error"), "cannot have a condition"),
    ],
)
def test_bad_boundary_edges_are_refused(edge, message):
    with pytest.raises(DefinitionError, match=message):
        check(edge, Edge("gate", "b"))


def test_an_ordinary_and_a_boundary_edge_between_the_same_steps_are_refused():
    with pytest.raises(DefinitionError, match="declared twice"):
        check(Edge("charge", "approval", on="error"))


def test_one_edge_of_each_kind_per_step():
    with pytest.raises(DefinitionError, match="more than one error edge"):
        check(Edge("charge", "b", on="error"), Edge("charge", "gate", on="error"))


def test_a_step_reached_only_by_a_boundary_edge_is_fine():
    check(Edge("charge", "b", on="error"), Edge("approval", "gate", on="timeout", after=DAY))


def test_describe_and_checksum():
    edge = Edge("approval", "b", on="timeout", after=DAY)
    assert edge.describe() == {
        "source": "approval",
        "target": "b",
        "condition": None,
        "on": "timeout",
        "after_seconds": 86400.0,
    }
    # An ordinary edge describes itself as before (stored checksums stay valid).
    assert Edge("a", "b").describe() == {"source": "a", "target": "b", "condition": None}
    assert str(Edge("charge", "b", on="error")) == "charge -> b (on error)"


def test_a_timeout_edge_may_loop_back_and_rearm(engine):
    engine.registry.register_definition(
        WorkflowDefinition(
            name="nag",
            version="1",
            initial_step="approval",
            steps={"approval": Approval(), "nag": Notify(), "ship": Ship()},
            edges=[
                Edge("approval", "ship"),
                Edge("approval", "nag", on="timeout", after=DAY),
                Edge("nag", "approval"),
            ],
        )
    )
    instance = run(engine, "nag")
    for _ in range(2):
        advance_time(DAY + timedelta(minutes=1), engine)
        if isinstance(engine, InProcessWorker):
            engine.run()
    runs = list(instance.step_runs.filter(step_name="approval").values_list("status", flat=True))
    assert runs == ["canceled", "canceled", "waiting"]
    task = HumanTask.objects.get(instance=instance, status=TaskStatus.OPEN)
    engine.complete_task(task.pk, UserFactory(is_superuser=True).pk, {"approved": True})
    if isinstance(engine, InProcessWorker):
        engine.run()
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["shipped"] is True
    assert instance.events.filter(type="StepTimedOut").count() == 2
