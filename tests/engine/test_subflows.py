"""Sub-workflows: a child per step (or per item), joined once, failing and canceling
with the parent; on SQLite and PostgreSQL (the races)."""

import threading

import pytest
from django.db import connections

from django_workflows import (
    Edge,
    LocalExecutionEngine,
    ParallelGateway,
    SubWorkflowStep,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.engine.subflow_join import joinable
from django_workflows.exceptions import DefinitionError
from django_workflows.models import (
    HumanTask,
    StepRun,
    WorkflowEvent,
    WorkflowInstance,
)
from testproject.testapp import subflow_workflows as sw

from ..workflows import Fail

LINES = [{"sku": "a", "qty": 2, "price": 5}, {"sku": "b", "qty": 1, "price": 7}]


@pytest.fixture
def registry():
    reg = WorkflowRegistry()
    sw.register(reg)
    return reg


@pytest.fixture
def engine(registry, bus):
    return LocalExecutionEngine(registry, event_bus=bus)


@pytest.fixture(autouse=True)
def _fail_on():
    sw.FAIL["on"] = True
    yield
    sw.FAIL["on"] = True


def children(instance):
    return list(
        WorkflowInstance.objects.filter(parent=instance).order_by("parent_item", "started_at")
    )


def events(instance, type_):
    return list(WorkflowEvent.objects.filter(instance=instance, type=type_).order_by("id"))


def test_a_child_runs_and_its_output_is_mapped_back(engine, db):
    parent = engine.start_workflow("sub_single", initial_data={"the_line": LINES[0], "x": 1})

    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context["line_total"] == 10
    assert parent.context["done"] is True
    assert "total" not in parent.context  # only the mapped keys come back
    [child] = children(parent)
    assert child.status == WorkflowStatus.COMPLETED
    assert child.context["line"] == LINES[0]
    assert "x" not in child.context  # only the mapped keys go in
    run = StepRun.objects.get(instance=parent, step_name="price")
    assert (run.status, run.step_type) == ("completed", "subworkflow")
    assert child.parent_step_run == run and child.parent_item == 0
    [started] = events(parent, "SubWorkflowStarted")
    assert started.payload["child_id"] == str(child.pk)
    assert started.payload["child_workflow"] == "sub_price"
    [finished] = events(parent, "SubWorkflowFinished")
    assert finished.payload["status"] == "completed"


def test_without_input_and_output_nothing_is_copied(registry, engine, db):
    registry.register_definition(
        WorkflowDefinition(
            name="bare",
            version="1",
            initial_step="sub",
            steps={"sub": SubWorkflowStep("sub_approve")},
            edges=[],
        )
    )
    parent = engine.start_workflow("bare", initial_data={"secret": 1})
    [child] = children(parent)
    assert child.context == {}
    engine.complete_human_task(child.pk, "approve", None, {"ok": True})
    parent.refresh_from_db()
    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context == {"secret": 1}


def test_for_each_starts_a_child_per_item_and_collects_their_outputs_in_order(engine, db):
    lines = [*LINES, {"sku": "c", "qty": 3, "price": 1}]
    parent = engine.start_workflow("sub_order", initial_data={"lines": lines, "currency": "EUR"})

    assert parent.status == WorkflowStatus.COMPLETED
    assert [r["total"] for r in parent.context["priced"]] == [10, 7, 3]
    assert parent.context["order_total"] == 20
    kids = children(parent)
    assert [c.parent_item for c in kids] == [0, 1, 2]
    assert [c.context["line"]["sku"] for c in kids] == ["a", "b", "c"]
    assert all(c.context["currency"] == "EUR" for c in kids)
    assert len(events(parent, "SubWorkflowFinished")) == 3
    assert StepRun.objects.filter(instance=parent, step_name="sum").count() == 1


def test_an_empty_list_completes_at_once(engine, db):
    parent = engine.start_workflow("sub_order", initial_data={"lines": []})
    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context["priced"] == [] and parent.context["order_total"] == 0
    assert not children(parent)


def test_the_parent_waits_for_every_child_of_a_for_each(engine, db):
    parent = engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y"]})
    assert parent.status == WorkflowStatus.WAITING
    first, second = children(parent)
    assert HumanTask.objects.filter(instance__in=[first, second], status="open").count() == 2

    engine.complete_human_task(second.pk, "approve", None, {"ok": False})
    parent.refresh_from_db()
    assert parent.status == WorkflowStatus.WAITING  # one still runs

    engine.complete_human_task(first.pk, "approve", None, {"ok": True})
    parent.refresh_from_db()
    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context["approve_lines"] == [True, False]  # results_key: the step's name
    assert first.__class__.objects.get(pk=first.pk).context["item"] == "x"


def test_a_failing_child_fails_the_step_and_a_retry_starts_a_new_child(engine, db):
    line = {"sku": "z", "qty": 1, "price": 1, "fail": True}
    parent = engine.start_workflow("sub_single", initial_data={"the_line": line})

    assert parent.status == WorkflowStatus.FAILED
    assert parent.failed_step == "price"
    assert "sub-workflow 'sub_price'" in parent.error and "cannot price z" in parent.error
    [old] = children(parent)
    assert old.status == WorkflowStatus.FAILED
    run = StepRun.objects.get(instance=parent, step_name="price")
    assert run.status == "failed"
    [failed] = [e for e in events(parent, "StepExecuted") if e.payload["status"] == "failed"]
    assert failed.payload["step_type"] == "subworkflow"

    sw.FAIL["on"] = False
    parent = engine.retry(parent.pk)
    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context["line_total"] == 1
    old_again, new = children(parent)
    assert old_again.pk == old.pk and old_again.status == WorkflowStatus.FAILED
    assert new.status == WorkflowStatus.COMPLETED and new.parent_step_run != old.parent_step_run


def test_a_canceled_child_fails_the_step_and_cancels_its_siblings(engine, db):
    parent = engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y", "z"]})
    first, _second, third = children(parent)
    engine.complete_human_task(third.pk, "approve", None, {"ok": True})

    engine.cancel_workflow(first.pk, reason="wrong line")

    parent.refresh_from_db()
    assert parent.status == WorkflowStatus.FAILED
    assert parent.failed_step == "approve_lines"
    assert "canceled" in parent.error
    statuses = [c.status for c in children(parent)]
    assert statuses == ["canceled", "canceled", "completed"]
    assert not HumanTask.objects.filter(instance__parent=parent, status="open").exists()


def test_canceling_the_parent_cancels_its_running_children(engine, db):
    parent = engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y"]})
    first, second = children(parent)
    engine.complete_human_task(first.pk, "approve", None, {"ok": True})

    engine.cancel_workflow(parent.pk, reason="order withdrawn")

    assert [c.status for c in children(parent)] == ["completed", "canceled"]
    canceled = events(second, "WorkflowCanceled")[0]
    assert str(parent.pk) in canceled.payload["reason"]
    assert not HumanTask.objects.filter(instance=second, status="open").exists()


def branch_failing(registry):
    """A sub-workflow step beside a machine step that fails: the parent fails while
    its child still waits."""
    registry.register_definition(
        WorkflowDefinition(
            name="beside",
            version="1",
            initial_step="fork",
            steps={
                "fork": ParallelGateway(),
                "approve": SubWorkflowStep("sub_approve", output={"ok": "ok"}),
                "charge": Fail(),
            },
            edges=[Edge("fork", "approve"), Edge("fork", "charge")],
        )
    )


def test_retrying_the_parent_does_not_start_a_second_child_while_one_runs(registry, engine, db):
    branch_failing(registry)
    parent = engine.start_workflow("beside")
    assert parent.status == WorkflowStatus.FAILED and parent.failed_step == "charge"
    [child] = children(parent)
    assert child.status == WorkflowStatus.WAITING

    # Retried from the sub-workflow step itself: the running child is kept.
    parent = engine.retry(parent.pk, from_step="approve")
    assert [c.pk for c in children(parent)] == [child.pk]
    runs = StepRun.objects.filter(instance=parent, step_name="approve").order_by("id")
    assert [r.status for r in runs] == ["canceled", "waiting"]
    child.refresh_from_db()
    assert child.parent_step_run == runs[1]
    assert parent.current_steps.count("approve") == 1


def test_a_child_finishing_while_the_parent_failed_is_joined_on_retry(registry, engine, db):
    branch_failing(registry)
    parent = engine.start_workflow("beside")
    [child] = children(parent)
    engine.complete_human_task(child.pk, "approve", None, {"ok": True})
    parent.refresh_from_db()
    assert parent.status == WorkflowStatus.FAILED  # not joined while failed
    assert StepRun.objects.get(instance=parent, step_name="approve").status == "waiting"

    from ..workflows import FAIL_SWITCH

    FAIL_SWITCH["on"] = False
    parent = engine.retry(parent.pk)
    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context["ok"] is True
    assert len(children(parent)) == 1


def test_a_lost_join_is_done_by_the_sweep(engine, db):
    parent = engine.start_workflow("sub_approval", initial_data={"lines": ["x"]})
    [child] = children(parent)
    # The child finishes but its parent's join is lost (say, the worker died).
    lost = []
    engine.dispatch = lost.extend  # type: ignore[method-assign]
    engine.complete_human_task(child.pk, "approve", None, {"ok": True})
    del engine.dispatch
    parent.refresh_from_db()
    assert parent.status == WorkflowStatus.WAITING
    run = StepRun.objects.get(instance=parent, step_name="approve_lines")
    assert run.pk in lost and joinable(10) == [run.pk]

    engine.run_due_timers()

    parent.refresh_from_db()
    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context["approve_lines"] == [True]
    assert joinable(10) == []


def test_an_unknown_child_workflow_fails_the_parent_cleanly(registry, engine, db):
    registry.register_definition(
        WorkflowDefinition(
            name="dangling",
            version="1",
            initial_step="sub",
            steps={"sub": SubWorkflowStep("no_such_workflow")},
            edges=[],
        )
    )
    parent = engine.start_workflow("dangling")
    assert parent.status == WorkflowStatus.FAILED
    assert "no_such_workflow" in parent.error
    assert not children(parent)


def test_a_bad_mapping_is_refused_when_the_definition_is_built():
    with pytest.raises(DefinitionError, match="input="):
        SubWorkflowStep("x", input=["a"])
    with pytest.raises(DefinitionError, match="for_each="):
        SubWorkflowStep("x", for_each=3)


def test_a_for_each_that_is_no_list_fails_the_parent(engine, db):
    parent = engine.start_workflow("sub_order", initial_data={"lines": "abc"})
    assert parent.status == WorkflowStatus.FAILED
    assert "for_each must give a list" in parent.error


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_children_finishing_at_once_advance_the_parent_once(engine):
    for _ in range(5):
        parent = engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y"]})
        kids = children(parent)
        barrier = threading.Barrier(2)
        errors = []

        def finish(child, barrier=barrier, errors=errors):
            try:
                barrier.wait(timeout=10)
                engine.complete_human_task(child.pk, "approve", None, {"ok": True})
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=finish, args=(c,)) for c in kids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        parent.refresh_from_db()
        assert parent.status == WorkflowStatus.COMPLETED
        assert StepRun.objects.filter(instance=parent, step_name="done").count() == 1
        assert len(events(parent, "SubWorkflowFinished")) == 2
        assert len(events(parent, "WorkflowCompleted")) == 1


def test_a_workflow_that_starts_itself_stops_at_the_depth_limit(registry, engine, db):
    from django_workflows.engine.subflows import MAX_DEPTH

    registry.register_definition(
        WorkflowDefinition(
            name="forever",
            version="1",
            initial_step="again",
            steps={"again": SubWorkflowStep("forever")},
            edges=[],
        )
    )
    top = engine.start_workflow("forever")
    chain = [top]
    while kids := children(chain[-1]):
        chain.append(kids[0])
    assert len(chain) == MAX_DEPTH + 1  # the top, and MAX_DEPTH levels below it
    deepest = chain[-1]
    assert deepest.status == WorkflowStatus.FAILED
    assert "nest" in deepest.error
    # The failure travels up: each parent's step fails in turn.
    top.refresh_from_db()
    assert top.status == WorkflowStatus.FAILED
    assert all(WorkflowInstance.objects.get(pk=i.pk).status == WorkflowStatus.FAILED for i in chain)


def test_cancel_waiting_cancels_the_runs_children_only(engine, db):
    from django_workflows.engine import transition

    parent = engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y"]})
    run = StepRun.objects.get(instance=parent, step_name="approve_lines")
    step = engine.registry.get_definition("sub_approval").steps["approve_lines"]
    assert step.waits is True
    counted = []

    def body(tx):
        counted.append(step.cancel_waiting(tx, run))

    _, runnable, _ = transition.run(engine, parent.pk, body)

    assert counted == [2]
    assert [c.status for c in children(parent)] == ["canceled", "canceled"]
    # The children's notices went nowhere: what becomes of the step is the caller's.
    assert runnable == []
    run.refresh_from_db()
    assert run.status == "waiting"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_canceling_the_parent_while_its_child_completes_never_deadlocks(engine):
    from django_workflows.exceptions import StateConflict, TaskNotOpen

    for _ in range(5):
        parent = engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y"]})
        first, second = children(parent)
        engine.complete_human_task(second.pk, "approve", None, {"ok": True})
        barrier = threading.Barrier(2)
        errors = []

        def act(call, barrier=barrier, errors=errors):
            try:
                barrier.wait(timeout=10)
                call()
            except (StateConflict, TaskNotOpen):
                pass  # the other one won: a clear conflict
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connections.close_all()

        calls = [
            lambda parent=parent: engine.cancel_workflow(parent.pk, reason="withdrawn"),
            lambda first=first: engine.complete_human_task(first.pk, "approve", None, {"ok": True}),
        ]
        threads = [threading.Thread(target=act, args=(c,)) for c in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        parent.refresh_from_db()
        first.refresh_from_db()
        # Either the cancel came first (the child is canceled with it) or the child
        # completed and the parent moved on before the cancel, which then conflicted.
        if parent.status == WorkflowStatus.CANCELED:
            assert first.status in (WorkflowStatus.CANCELED, WorkflowStatus.COMPLETED)
            done = StepRun.objects.filter(instance=parent, step_name="done")
            assert not done.filter(status="completed").exists()
        else:
            assert parent.status == WorkflowStatus.COMPLETED
            assert first.status == WorkflowStatus.COMPLETED


# -- with the boundary edges ----------------------------------------------------------


def _with_boundary(registry, on, **edge):
    registry.register_definition(
        WorkflowDefinition(
            name=f"sub_{on}",
            version="1",
            initial_step="lines",
            steps={
                "lines": SubWorkflowStep(
                    "sub_approve" if on == "timeout" else "sub_price",
                    for_each="lines",
                    item_key="line",
                ),
                "done": sw.Done(),
                "handle": sw.Done(),
            },
            edges=[Edge("lines", "done"), Edge("lines", "handle", on=on, **edge)],
        )
    )


def test_a_failed_child_takes_the_steps_error_edge(engine, registry, db):
    _with_boundary(registry, "error")
    lines = [LINES[0], {"sku": "x", "qty": 1, "price": 1, "fail": True}]
    parent = engine.start_workflow("sub_error", initial_data={"lines": lines})

    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context["error"]["step"] == "lines"
    assert "cannot price x" in parent.context["error"]["message"]
    assert [e.step_name for e in events(parent, "StepExecuted")][-1] == "handle"
    assert not events(parent, "WorkflowFailed")


def test_a_timeout_edge_cancels_the_waiting_children_and_goes_on(engine, registry, db):
    from datetime import timedelta

    from django_workflows.testing import advance_time

    _with_boundary(registry, "timeout", after=timedelta(hours=1))
    parent = engine.start_workflow("sub_timeout", initial_data={"lines": LINES})
    assert parent.status == WorkflowStatus.WAITING
    assert len(children(parent)) == 2

    advance_time(timedelta(hours=2), engine)

    parent.refresh_from_db()
    assert parent.status == WorkflowStatus.COMPLETED
    assert parent.context.get("done") is True  # the "handle" step ran (a Done)
    assert [c.status for c in children(parent)] == [WorkflowStatus.CANCELED] * 2
    assert len(events(parent, "StepTimedOut")) == 1
    assert not HumanTask.objects.filter(instance__parent=parent, status="open").exists()
