"""The test project's Celery app: ``celery -A testproject.celery_app worker``.

Configured from the ``CELERY_*`` Django settings; ``register_tasks`` adds the
django-workflows tasks and the sweep's beat schedule (every ``CELERY_SWEEP_SECONDS``).
"""

import os

from celery import Celery

from django_workflows.contrib.celery.tasks import register_tasks

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

app = Celery("testproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
register_tasks(app, sweep_interval=float(os.environ.get("CELERY_SWEEP_SECONDS", "1")))
