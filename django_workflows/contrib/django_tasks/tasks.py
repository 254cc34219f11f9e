"""The Django Tasks of django-workflows. A Tasks backend's worker imports them by path
(``django_workflows.contrib.django_tasks.tasks.run_step``)."""

from __future__ import annotations

try:  # Django 6 ships the Tasks framework; before it, the django-tasks backport
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    try:
        from django_tasks import task
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "DjangoTasksExecutionEngine needs Django 6 or the django-tasks backport: "
            "pip install 'django-workflows-engine[tasks]'"
        ) from exc

from .. import jobs


@task
def run_step(run_id: int, traceparent: str | None = None) -> None:
    """Execute one step run, then send what it made runnable."""
    jobs.run_step(run_id, traceparent)


@task
def sweep() -> int:
    """Timers, expired leases, due retries, lost messages."""
    return jobs.sweep()
