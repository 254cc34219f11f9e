"""Helpers for the tests of your own workflows.

Timers and retries wait on the database clock, and a worker backend runs steps
elsewhere; these helpers make both happen inside a test, without sleeping::

    from django_workflows.testing import InProcessWorker, advance_time

    advance_time(timedelta(days=2), engine)     # the 2-day reminder timer fires now
    worker = InProcessWorker(registry)          # steps queue up instead of running...
    worker.run()                                # ...until the test runs them
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db.models import F

from .engine import BaseExecutionEngine, get_engine
from .models import HumanTask, StepRun, StepRunStatus, TaskStatus


def advance_time(
    delta: timedelta, engine: BaseExecutionEngine | None = None, *, instance: Any = None
) -> int:
    """Move the workflows' clock ``delta`` forward, then sweep: every timer, backoff
    retry, timeout edge, signal wait's timeout, task reminder and escalation due within
    ``delta`` from now is due now (their due times, and open tasks' ``due_at``, move back
    by ``delta``; nothing else changes).
    ``instance`` limits it to one instance. Returns how many runs and tasks the sweep
    handled."""
    runs = StepRun.objects.filter(  # WAITING: a signal wait's timeout
        status__in=(StepRunStatus.SCHEDULED, StepRunStatus.QUEUED, StepRunStatus.WAITING),
        due_at__isnull=False,
    )
    tasks = HumanTask.objects.filter(status=TaskStatus.OPEN)
    if instance is not None:
        runs = runs.filter(instance=instance)
        tasks = tasks.filter(instance=instance)
    runs.update(due_at=F("due_at") - delta)
    # Timeout edges of the steps that wait.
    waiting = StepRun.objects.filter(
        status__in=(StepRunStatus.WAITING, StepRunStatus.SCHEDULED), timeout_at__isnull=False
    )
    if instance is not None:
        waiting = waiting.filter(instance=instance)
    waiting.update(timeout_at=F("timeout_at") - delta)
    # F() - delta on a NULL stays NULL: a deadline the task has not moves nowhere.
    tasks.update(
        due_at=F("due_at") - delta,
        remind_at=F("remind_at") - delta,
        escalate_at=F("escalate_at") - delta,
    )
    return (engine or get_engine()).run_due_timers()


class InProcessWorker(BaseExecutionEngine):
    """An engine whose machine steps wait in a list until the test runs them, as a worker
    would: ``start_workflow`` returns with its first machine step queued.

    Use it to test what happens between steps (a cancel while a step is queued, what
    the admin shows meanwhile) or a worker's view of the protocol (``claim``,
    ``finish``, ``fail``)."""

    chain_steps = False  # one step per run_next(), as the test sees it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queued: list[int] = []

    def dispatch(self, run_ids: Iterable[int]) -> None:
        self.queued.extend(run_ids)

    def run_next(self) -> bool:
        """Process the oldest queued run; False if none was queued."""
        if not self.queued:
            return False
        self.queued.extend(self.process_run(self.queued.pop(0)))
        return True

    def run(self, limit: int = 10_000) -> int:
        """Process queued runs until none is left (at most ``limit``); returns how many."""
        done = 0
        while done < limit and self.run_next():
            done += 1
        return done
