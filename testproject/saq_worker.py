"""The test project's SAQ worker settings: ``saq testproject.saq_worker.settings``."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django.setup()

from django_workflows.contrib.saq import worker_settings  # noqa: E402

settings = worker_settings(
    concurrency=int(os.environ.get("SAQ_CONCURRENCY", "3")),
    sweep_cron=os.environ.get("SAQ_SWEEP_CRON", "* * * * * *"),
    sweep_timeout=int(os.environ.get("SAQ_SWEEP_TIMEOUT", "60")),
    timers={"sweep": int(os.environ.get("SAQ_QUEUE_SWEEP_SECONDS", "60"))},
)
