"""The SAQ side of django-workflows: the jobs, and the settings the ``saq`` command runs.

A worker settings module (``saq proj.saq_worker.settings``)::

    import os
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    django.setup()

    from django_workflows.contrib.saq import worker_settings

    settings = worker_settings(concurrency=10)

The jobs are async functions that run the (sync) engine in a thread, so the worker's
event loop stays free while steps execute. This module imports no models.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections

try:
    from saq import CronJob, Queue
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "SAQExecutionEngine needs SAQ: pip install 'django-workflows-engine[saq]'"
    ) from exc

from ...conf import backend_setting
from .. import jobs

DEFAULT_QUEUE_NAME = "django_workflows"
# A step job that stops touching its SAQ heartbeat for this long (its worker died) is
# cleaned up by SAQ's own sweep. The step itself is recovered by the engine's sweep.
HEARTBEAT_SECONDS = 60


def queue_from_settings() -> Queue:
    """A new ``saq.Queue`` for ``DJANGO_WORKFLOWS["SAQ_URL"]``, named ``["SAQ_QUEUE"]``."""
    url, source = backend_setting("SAQ_URL")
    if not url:
        raise ImproperlyConfigured(
            f"set {source} (such as 'redis://localhost:6379/0') "
            "or pass a saq Queue to SAQExecutionEngine(queue=...)"
        )
    name = backend_setting("SAQ_QUEUE")[0] or DEFAULT_QUEUE_NAME
    return Queue.from_url(url, name=name)


def _in_thread(func: Any, *args: Any) -> Any:
    """Run Django code in a worker thread as Django runs a request: stale database
    connections closed before, and those past ``CONN_MAX_AGE`` after."""
    close_old_connections()
    try:
        return func(*args)
    finally:
        close_old_connections()


async def run_workflow_step(
    ctx: dict[str, Any], *, run_id: int, traceparent: str | None = None
) -> None:
    """The step job: execute one step run in a thread, touching the job's heartbeat."""
    work = asyncio.ensure_future(
        sync_to_async(_in_thread, thread_sensitive=False)(jobs.run_step, run_id, traceparent)
    )
    job = ctx.get("job")
    while True:
        done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_SECONDS / 3)
        if done:
            return work.result()
        if job is not None:
            await job.update()


async def sweep_workflows(ctx: dict[str, Any]) -> int:
    """The sweep job (a cron job): timers, expired leases, due retries, lost messages."""
    return await sync_to_async(_in_thread, thread_sensitive=False)(jobs.sweep)


async def _size_thread_pool(ctx: dict[str, Any]) -> None:
    # Steps run in the loop's default executor; give it a thread per concurrent job
    # (asyncio's default is min(32, CPUs + 4)), plus one for the sweep.
    worker = ctx["worker"]
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(worker.concurrency + 1, thread_name_prefix="django-workflows")
    )


def worker_settings(
    queue: Queue | None = None,
    *,
    concurrency: int = 10,
    sweep_cron: str | None = "* * * * * *",
    sweep_timeout: int = 60,
    **extra: Any,
) -> dict[str, Any]:
    """Settings for ``saq``: the step job, the sweep every second, ``concurrency`` steps
    at a time (each in a thread). ``queue`` defaults to ``queue_from_settings()``.

    ``sweep_cron`` is a croniter expression (a sixth field counts seconds); None runs no
    sweep here (run ``manage.py workflow_sweep --loop`` instead). A sweep job that takes
    longer than ``sweep_timeout`` seconds, or whose worker died, is given up by SAQ and
    the next one is scheduled. ``extra`` is passed on (``timers``, ``startup``, ...).
    """
    cron_jobs = []
    if sweep_cron is not None:
        cron_jobs.append(CronJob(sweep_workflows, cron=sweep_cron, timeout=sweep_timeout))
    startup = extra.pop("startup", None)
    if startup is None:
        startup = []
    elif callable(startup):
        startup = [startup]
    return {
        "queue": queue if queue is not None else queue_from_settings(),
        "functions": [run_workflow_step],
        "cron_jobs": cron_jobs,
        "concurrency": concurrency,
        "startup": [_size_thread_pool, *startup],
        **extra,
    }
