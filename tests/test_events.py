"""Events: stored with the transition, delivered after commit, listeners never break a workflow."""

import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_workflows import (
    EventBus,
    HumanTaskCompleted,
    LocalExecutionEngine,
    TaskNotOpen,
    WorkflowCompleted,
)
from django_workflows.signals import workflow_event

pytestmark = pytest.mark.django_db


def test_events_in_order_to_the_bus_and_rows(
    engine, bus, manager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        instance = engine.start_workflow("review", initial_data={"score": 85})

    expected = [
        ("WorkflowStarted", ""),
        ("StepExecuted", "review"),
        ("StepExecuted", "approve"),
        ("StepExecuted", "notify"),
        ("WorkflowCompleted", ""),
    ]
    assert [(e.type, getattr(e, "step_name", "")) for e in bus.events] == expected
    assert list(instance.events.values_list("type", "step_name")) == expected
    assert {e.instance_id for e in bus.events} == {str(instance.id)}
    assert all(e.workflow_name == "review" and e.workflow_version == "1.0.0" for e in bus.events)


def test_human_task_events(engine, bus, manager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        instance = engine.start_workflow("expense", initial_data={"amount": 1})
        engine.complete_human_task(instance.id, "manager_approval", manager.pk, {"approved": False})

    types = [e.type for e in bus.events]
    assert types == [
        "WorkflowStarted",
        "StepExecuted",
        "HumanTaskCreated",
        "HumanTaskCompleted",
        "StepExecuted",
        "WorkflowCompleted",
    ]
    completed = bus.events[3]
    assert isinstance(completed, HumanTaskCompleted)
    assert (completed.user_id, completed.data["approved"]) == (manager.pk, False)


def test_events_are_delivered_only_after_commit(engine, bus, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        engine.start_workflow("notifications")
    assert bus.events == []  # nothing before commit
    for callback in callbacks:
        callback()
    assert bus.events[-1].type == "WorkflowCompleted"


def test_a_refused_transition_emits_nothing(
    engine, bus, manager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        instance = engine.start_workflow("expense", initial_data={"amount": 1})
        engine.complete_human_task(instance.id, "manager_approval", manager.pk, {"approved": False})
    seen = len(bus.events)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(TaskNotOpen):
        engine.complete_human_task(instance.id, "manager_approval", manager.pk, {"approved": True})
    assert len(bus.events) == seen


def test_signal_receives_every_event_and_filters_by_sender(
    engine, django_capture_on_commit_callbacks
):
    everything, completed = [], []

    def on_any(sender, event, **kwargs):
        everything.append(event.type)

    def on_completed(sender, event, **kwargs):
        completed.append(event)

    workflow_event.connect(on_any)
    workflow_event.connect(on_completed, sender=WorkflowCompleted)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            instance = engine.start_workflow("notifications")
    finally:
        workflow_event.disconnect(on_any)
        workflow_event.disconnect(on_completed, sender=WorkflowCompleted)
    assert everything[0] == "WorkflowStarted" and everything[-1] == "WorkflowCompleted"
    assert len(everything) == 7
    assert [e.instance_id for e in completed] == [str(instance.id)]


def test_raising_listeners_are_logged_and_never_break_the_workflow(
    wf_registry, caplog, django_capture_on_commit_callbacks
):
    class Broken(EventBus):
        def emit(self, event):
            raise RuntimeError("bus down")

    def broken_receiver(sender, event, **kwargs):
        raise ValueError("receiver down")

    engine = LocalExecutionEngine(wf_registry, event_bus=Broken())
    workflow_event.connect(broken_receiver)
    try:
        with (
            caplog.at_level(logging.ERROR, "django_workflows"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            instance = engine.start_workflow("notifications")
    finally:
        workflow_event.disconnect(broken_receiver)
    assert instance.status == "completed"
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "failed on WorkflowCompleted" in messages
    assert any("bus down" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert any("receiver down" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_async_event_bus(wf_registry, django_capture_on_commit_callbacks):
    received = []

    class AsyncBus(EventBus):
        async def emit(self, event):
            received.append(event.type)

    engine = LocalExecutionEngine(wf_registry, event_bus=AsyncBus())
    with django_capture_on_commit_callbacks(execute=True):
        engine.start_workflow("notifications")
    assert received[0] == "WorkflowStarted" and received[-1] == "WorkflowCompleted"


def _queries(fn):
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return len(ctx.captured_queries)


def test_queries_per_step_do_not_grow_with_data(engine, manager):
    """The same transition costs the same number of queries with 1 or 60 other instances."""

    def one_approval():
        instance = engine.start_workflow("expense", initial_data={"amount": 1})
        return _queries(
            lambda: engine.complete_human_task(
                instance.id, "manager_approval", manager.pk, {"approved": False}
            )
        )

    def one_fan_out():
        return _queries(lambda: engine.start_workflow("notifications"))

    one_approval(), one_fan_out()  # stores the definition versions
    first = (one_approval(), one_fan_out())
    for _ in range(30):
        engine.start_workflow("expense", initial_data={"amount": 1})
        engine.start_workflow("notifications")
    assert (one_approval(), one_fan_out()) == first
    # Five machine steps and a gateway; per machine step: claim (lock, update) and commit
    # (lock, fence, new runs, active runs, save, events), each with BEGIN/COMMIT.
    assert first[1] <= 5 * 16
