"""``DjangoTasksExecutionEngine``: machine steps run through Django's Tasks framework."""

from __future__ import annotations

from typing import Any

from ... import tracing
from ..queued import QueueExecutionEngine
from .tasks import run_step


class DjangoTasksExecutionEngine(QueueExecutionEngine):
    """Enqueues each runnable step run as the ``run_step`` task of Django's Tasks
    framework, so any Tasks backend runs the steps (django-tasks' database backend and
    its ``db_worker`` command, or another).

    ``backend``, ``queue_name`` and ``priority`` choose where the task goes (default:
    the ``default`` backend, its ``default`` queue, priority 0); a choice the backend
    does not accept raises ``InvalidTaskError`` here. The task is enqueued after
    commit, with the step-run id as its only argument.
    """

    def __init__(
        self,
        registry: Any = None,
        event_bus: Any = None,
        *,
        backend: str | None = None,
        queue_name: str | None = None,
        priority: int | None = None,
    ) -> None:
        super().__init__(registry, event_bus)
        self.task = run_step.using(backend=backend, queue_name=queue_name, priority=priority)

    def send(self, run_id: int) -> None:
        self.task.enqueue(run_id, *tracing.message_args(run_id))
