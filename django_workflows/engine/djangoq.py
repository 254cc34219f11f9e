"""The django-q2 backend: machine steps run as tasks on a ``qcluster``.

Messages carry a step-run id and nothing else. The worker task claims the run
(QUEUED -> RUNNING under a lease), executes the step outside any transaction and
commits the outcome; a duplicated, late or lost message changes nothing that the
database does not allow, and the sweep re-sends what was lost. The cluster runs the
sweep by itself, one process at a time (``sweeper.py``, started from ``apps.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from .. import tracing
from .queued import QueueExecutionEngine

logger = logging.getLogger("django_workflows.engine")

RUN_STEP = "django_workflows.engine.djangoq.run_step"
SWEEP = "django_workflows.engine.djangoq.sweep"
SCHEDULE_NAME = "django_workflows.sweep"


def run_step(run_id: int, traceparent: str | None = None) -> None:
    """The django-q2 task: execute one step run, then send what it made runnable.
    ``traceparent``: the span that queued it, when tracing (``tracing.message_args``)."""
    from . import get_engine

    engine = get_engine()
    with tracing.remote_parent(traceparent):
        engine.dispatch(engine.process_run(run_id))


def sweep() -> int:
    """The sweep as a task (the django-q2 schedule, other backends' jobs): timers, expired
    leases, due retries, lost messages. A qcluster also sweeps without it."""
    from . import get_engine

    return get_engine().run_due_timers()


class DjangoQExecutionEngine(QueueExecutionEngine):
    """Runs machine steps as django-q2 tasks; ``start_workflow`` returns at once.

    ``cluster`` names a django-q2 ``ALT_CLUSTERS`` entry (default: the main cluster);
    ``broker`` is a django-q2 broker instance (default: the one ``Q_CLUSTER`` configures).
    With the ORM broker on the project database, enqueueing is part of the caller's
    transaction: a rolled-back transition sends nothing and a committed one cannot lose
    its message. With another broker (Redis), messages go out after commit, and the
    sweep re-sends any that a crash or the broker lost.
    """

    def __init__(
        self,
        registry: Any = None,
        event_bus: Any = None,
        *,
        cluster: str | None = None,
        broker: Any = None,
    ) -> None:
        super().__init__(registry, event_bus)
        self.cluster = cluster
        self._broker_instance: Any = broker

    def _broker(self) -> Any:
        # One broker (and its connection pool) per engine, not one per message.
        if self._broker_instance is None:
            from django_q.brokers import get_broker

            self._broker_instance = get_broker(self.cluster)
        return self._broker_instance

    def sends_in_transaction(self) -> bool:
        return _enqueues_in_transaction(self._broker())

    def send(self, run_id: int) -> None:
        from django_q.tasks import async_task

        async_task(
            RUN_STEP,
            run_id,
            *tracing.message_args(run_id),
            task_name=f"workflow-step-{run_id}",
            broker=self._broker(),
            cluster=self.cluster,
            save=False,
        )


def _enqueues_in_transaction(broker: Any) -> bool:
    """True for django-q2's ORM broker on the default database: its queue row commits
    (or rolls back) with the caller's transaction."""
    from django.db import DEFAULT_DB_ALIAS
    from django_q.brokers.orm import ORM
    from django_q.conf import Conf

    return isinstance(broker, ORM) and Conf.ORM == DEFAULT_DB_ALIAS


def install_schedule(minutes: int = 1) -> tuple[Any, bool]:
    """Create or update the django-q2 schedule that runs the sweep every ``minutes``."""
    from django_q.models import Schedule

    return Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": SWEEP,
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
        },
    )
