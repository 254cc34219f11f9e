"""Workflows the worker tests run on a real qcluster (so they live in the project registry).

Steps coordinate with the test through files in ``context['dir']``: a step writes
``<step>.started`` when it begins, so a test can wait for that and kill the worker.
"""

import os
import random
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    RetryPolicy,
    TimerStep,
    WaitForSignal,
    WorkflowDefinition,
    registry,
)

DEADLINE = 60.0


def mark(context, suffix: str) -> Path:
    path = Path(context.get("dir")) / f"{context.step_name}.{suffix}"
    with path.open("a") as f:
        f.write(f"{os.getpid()} {context.attempt}\n")
    return path


class Mark(BaseMachineStep):
    """Records pid and attempt, then sets ``<step>`` in the context."""

    def execute(self, context):
        mark(context, "done")
        context.set(context.step_name, {"pid": os.getpid(), "attempt": context.attempt})


class Rendezvous(Mark):
    """Waits until every branch named in ``context['meet']`` has started: proves they run
    at the same time (on different worker processes)."""

    def execute(self, context):
        mark(context, "started")
        folder = Path(context.get("dir"))
        deadline = time.monotonic() + DEADLINE
        while not all((folder / f"{b}.started").exists() for b in context.get("meet")):
            if time.monotonic() > deadline:
                raise TimeoutError("the other branches never started alongside this one")
            time.sleep(0.05)
        super().execute(context)


class HangOnFirstAttempt(Mark):
    """Attempt 1 hangs (the test kills its worker); later attempts complete."""

    retry = RetryPolicy(max_attempts=3)

    def execute(self, context):
        mark(context, "started")
        if context.attempt == 1:
            time.sleep(DEADLINE * 10)
        super().execute(context)


class KillOwnWorker(BaseMachineStep):
    """Kills the worker process running it, every time: a segfault or an OOM kill."""

    retry = RetryPolicy(max_attempts=2)

    def execute(self, context):
        mark(context, "started")
        os.kill(os.getpid(), signal.SIGKILL)


class Approve(BaseHumanStep):
    title = "Approve"
    fields = ("ok",)


class Decline(BaseMachineStep):
    """Always fails; its ``on_failure`` records the worker it ran on (error edges)."""

    retry = RetryPolicy(max_attempts=2, backoff=0)

    def execute(self, context):
        mark(context, "started")
        raise RuntimeError("card declined")

    def on_failure(self, context, error):
        context.set("on_failure", {"pid": os.getpid(), "error": str(error)})


def _register_boundary():
    registry.register_definition(
        WorkflowDefinition(
            name="worker_error_edge",
            version="1",
            initial_step="charge",
            steps={"charge": Decline(), "ship": Mark(), "notify": Mark()},
            edges=[Edge("charge", "ship"), Edge("charge", "notify", on="error")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="worker_timeout_edge",
            version="1",
            initial_step="start",
            steps={"start": Mark(), "approve": Approve(), "end": Mark(), "expired": Mark()},
            edges=[
                Edge("start", "approve"),
                Edge("approve", "end"),
                Edge("approve", "expired", on="timeout", after=timedelta(seconds=2)),
            ],
        )
    )


def _register():
    _register_boundary()
    join = ("left", "middle", "right")
    registry.register_definition(
        WorkflowDefinition(
            name="worker_fan_out",
            version="1",
            initial_step="start",
            steps={"start": Mark(), **{b: Rendezvous() for b in join}, "join": Mark()},
            edges=[*(Edge("start", b) for b in join), *(Edge(b, "join") for b in join)],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="worker_crash",
            version="1",
            initial_step="start",
            steps={"start": Mark(), "hang": HangOnFirstAttempt(), "end": Mark()},
            edges=[Edge("start", "hang"), Edge("hang", "end")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="worker_suicide",
            version="1",
            initial_step="die",
            steps={"die": KillOwnWorker(), "end": Mark()},
            edges=[Edge("die", "end")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="worker_approval",
            version="1",
            initial_step="start",
            steps={"start": Mark(), "approve": Approve(), "end": Mark()},
            edges=[Edge("start", "approve"), Edge("approve", "end")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="worker_timer",
            version="1",
            initial_step="start",
            steps={"start": Mark(), "wait": TimerStep(timedelta(seconds=2)), "end": Mark()},
            edges=[Edge("start", "wait"), Edge("wait", "end")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="worker_signal",
            version="1",
            initial_step="start",
            steps={
                "start": Mark(),
                "wait": WaitForSignal("go", key="go", timeout=timedelta(seconds=3)),
                "end": Mark(),
            },
            edges=[Edge("start", "wait"), Edge("wait", "end")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="worker_chain",
            version="1",
            initial_step="s1",
            steps={f"s{i}": Mark() for i in range(1, 6)},
            edges=[Edge(f"s{i}", f"s{i + 1}") for i in range(1, 5)],
        )
    )


_register()


# --- Fault injection (tests/reliability) ----------------------------------------------------
# Steps record every execution of their body in testapp.SideEffect, which the tests read.


class Effect(BaseMachineStep):
    """Inserts a SideEffect row, sleeps ``context['ms']`` (default 50-200) milliseconds,
    then sets its ``finished_at``: one row per execution, unfinished if the worker died.

    Fails its first attempt if its name is in ``context['fail_first']``."""

    retry = RetryPolicy(max_attempts=50)

    def execute(self, context):
        from django.utils import timezone

        from .models import SideEffect

        low, high = context.get("ms", [50, 200])
        planned = random.uniform(low, high) / 1000  # noqa: S311 - not cryptography
        row = SideEffect.objects.create(
            instance_id=context.instance_id,
            step=context.step_name,
            attempt=context.attempt,
            pid=os.getpid(),
            planned=planned,
            started_at=timezone.now(),
        )
        time.sleep(planned)
        SideEffect.objects.filter(pk=row.pk).update(finished_at=timezone.now())
        if context.attempt == 1 and context.step_name in context.get("fail_first", []):
            raise RuntimeError(f"{context.step_name}: first attempt fails on purpose")
        context.set(context.step_name, context.attempt)


class DueAt(TimerStep):
    """Due at ``context['due']`` (an ISO 8601 time with its UTC offset), or
    ``context['due_in']`` seconds after it starts, else in 2 seconds."""

    duration = timedelta(seconds=2)

    def get_due_at(self, context):
        from django.utils import timezone

        if context.get("due"):
            return datetime.fromisoformat(context.get("due"))
        if context.get("due_in") is not None:
            return timezone.now() + timedelta(seconds=context.get("due_in"))
        return None


def _register_reliability():
    registry.register_definition(
        WorkflowDefinition(
            name="reliability_chain",
            version="1",
            initial_step="s1",
            steps={"s1": Effect(), "s2": Effect(), "s3": Effect()},
            edges=[Edge("s1", "s2"), Edge("s2", "s3")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="reliability_fan",
            version="1",
            initial_step="start",
            steps={"start": Effect(), "left": Effect(), "right": Effect(), "join": Effect()},
            edges=[
                Edge("start", "left"),
                Edge("start", "right"),
                Edge("left", "join"),
                Edge("right", "join"),
            ],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="reliability_timer",
            version="1",
            initial_step="start",
            steps={"start": Effect(), "wait": DueAt(), "end": Effect()},
            edges=[Edge("start", "wait"), Edge("wait", "end")],
        )
    )
    registry.register_definition(
        WorkflowDefinition(
            name="reliability_timer_first",
            version="1",
            initial_step="wait",
            steps={"wait": DueAt(), "end": Effect()},
            edges=[Edge("wait", "end")],
        )
    )


_register_reliability()


def _register_subflows():
    from .subflow_workflows import register

    register(registry)


_register_subflows()
