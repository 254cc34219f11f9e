"""Workflows the worker tests run on a real qcluster (so they live in the project registry).

Steps coordinate with the test through files in ``context['dir']``: a step writes
``<step>.started`` when it begins, so a test can wait for that and kill the worker.
"""

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    RetryPolicy,
    TimerStep,
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


def _register():
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
            name="worker_chain",
            version="1",
            initial_step="s1",
            steps={f"s{i}": Mark() for i in range(1, 6)},
            edges=[Edge(f"s{i}", f"s{i + 1}") for i in range(1, 5)],
        )
    )


_register()
