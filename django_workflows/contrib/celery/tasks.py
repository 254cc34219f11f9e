"""The Celery tasks of django-workflows, registered on your app by ``register_tasks(app)``.

Call it in the module that creates your Celery app, so that the worker knows the tasks::

    app = Celery("proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    register_tasks(app)                 # and the sweep every second under `celery beat`

This module imports no models, so it is safe before ``django.setup()``.
"""

from __future__ import annotations

from typing import Any

from .. import jobs

RUN_STEP = "django_workflows.run_step"
SWEEP = "django_workflows.sweep"  # also the name of its beat schedule entry


def register_tasks(app: Any, *, sweep_interval: float | None = 1.0) -> dict[str, Any]:
    """Register ``django_workflows.run_step`` and ``django_workflows.sweep`` on ``app``.

    Both acknowledge late (after they return), so a message whose worker died is
    redelivered instead of lost. Neither stores a result. With ``sweep_interval``
    (seconds; None for none), the sweep is also added to the app's beat schedule, so
    that ``celery beat`` sends it; a sweep message not taken within one interval
    expires, so sweeps do not pile up behind busy workers. Every second by default: timers
    fire about a second late at most, and a crashed step runs again about a second after
    its lease expires. Returns the tasks by name.
    """
    options = {"acks_late": True, "ignore_result": True}
    tasks = {
        RUN_STEP: app.task(name=RUN_STEP, **options)(jobs.run_step),
        SWEEP: app.task(name=SWEEP, **options)(jobs.sweep),
    }
    if sweep_interval is not None:
        if sweep_interval <= 0:
            raise ValueError("sweep_interval must be positive (or None for no schedule)")
        app.add_periodic_task(
            sweep_interval, app.signature(SWEEP), name=SWEEP, expires=sweep_interval
        )
    return tasks
