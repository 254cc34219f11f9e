"""Steps and thread helpers of the engine-level race tests (in-process steps)."""

import threading
import time

from django.db import connections

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    EventBus,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.models import HumanTask, StepRun, WorkflowEvent

from ..helpers import TIMEOUT, QueueingEngine, in_threads  # noqa: F401  (re-exported)

ACTIVE_RUNS = ("queued", "running", "waiting", "scheduled")


class Journal:
    """Step executions in this process: (step, instance id, monotonic start time)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries: list[tuple[str, str, float]] = []

    def add(self, context):
        with self.lock:
            self.entries.append((context.step_name, str(context.instance_id), time.monotonic()))

    def of(self, step):
        return [entry for entry in self.entries if entry[0] == step]


journal = Journal()


class Recorded(BaseMachineStep):
    def execute(self, context):
        journal.add(context)
        context.set(context.step_name, True)


class Blocking(Recorded):
    """Tells the test it started (``entered``), then waits until the test releases it."""

    entered = threading.Event()
    release = threading.Event()

    def execute(self, context):
        journal.add(context)  # it starts now
        type(self).entered.set()
        assert type(self).release.wait(TIMEOUT), "the test never released the step"
        context.set(context.step_name, True)


class Failing(Recorded):
    """Fails while ``switch['on']``."""

    switch = {"on": True}

    def execute(self, context):
        journal.add(context)
        if type(self).switch["on"]:
            raise RuntimeError("failing on purpose")


class Approve(BaseHumanStep):
    title = "Approve"


class Hook(EventBus):
    """Calls ``on_event(event)`` for every event, after its transition committed."""

    def __init__(self):
        self.on_event = None

    def emit(self, event):
        if self.on_event is not None:
            self.on_event(event)


def in_background(target):
    """Start ``target`` in a thread; ``result()`` joins it and returns or raises."""
    outcome: dict = {}

    def runner():
        try:
            outcome["value"] = target()
        except Exception as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=runner)
    thread.start()

    def result():
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the background thread did not finish in time"
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    return result


def check_canceled(engine, instance_id, canceled_after: float):
    """A canceled instance is canceled through and through."""
    instance = engine.get_instance(instance_id)
    assert instance.status == WorkflowStatus.CANCELED
    assert instance.current_steps == []
    assert instance.tokens == {}
    runs = StepRun.objects.filter(instance_id=instance_id)
    assert not runs.filter(status__in=ACTIVE_RUNS).exists(), list(runs.values_list())
    assert not HumanTask.objects.filter(instance_id=instance_id, status="open").exists()
    events = list(WorkflowEvent.objects.filter(instance_id=instance_id).order_by("id"))
    types = [event.type for event in events]
    assert types.count("WorkflowCanceled") == 1, types
    canceled = next(event for event in events if event.type == "WorkflowCanceled")
    # Nothing happened to the instance after the cancel: no event, no new run...
    assert types[-1] == "WorkflowCanceled", types
    late = runs.filter(created_at__gt=canceled.created_at)
    assert not late.exists(), list(late.values_list("step_name", "status"))
    # ...and no step began executing once the cancel had returned.
    started = [e for e in journal.entries if e[1] == str(instance_id) and e[2] > canceled_after]
    assert not started, f"steps executed after the instance was canceled: {started}"
    # A step whose result was discarded left nothing in the context.
    for run in runs:
        if run.status == "canceled":
            assert run.step_name not in instance.context, (run.step_name, instance.context)
    return instance


def build_registry() -> WorkflowRegistry:
    """A registry of the race workflows; resets the steps' state."""
    registry = WorkflowRegistry()
    registry.register_definition(
        WorkflowDefinition(
            name="race_task",
            version="1",
            initial_step="approve",
            steps={"approve": Approve(), "after": Recorded()},
            edges=[Edge("approve", "after")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="race_cancel",
            version="1",
            initial_step="block",
            steps={"block": Blocking(), "after": Recorded()},
            edges=[Edge("block", "after")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="race_sibling",
            version="1",
            initial_step="start",
            steps={"start": Recorded(), "a": Blocking(), "b": Recorded(), "left": Failing()},
            # "a" comes first: it is the run that "start" claims for its own chain.
            edges=[Edge("start", "a"), Edge("start", "left"), Edge("a", "b")],
        )
    )
    journal.entries.clear()
    Blocking.entered = threading.Event()
    Blocking.release = threading.Event()
    Failing.switch["on"] = True
    return registry
