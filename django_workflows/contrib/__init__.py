"""Optional execution backends, each installed by an extra and imported only when used.

- ``django_workflows.contrib.celery``: ``CeleryExecutionEngine`` (extra ``celery``)
- ``django_workflows.contrib.saq``: ``SAQExecutionEngine`` (extra ``saq``)
- ``django_workflows.contrib.django_tasks``: ``DjangoTasksExecutionEngine`` (extra ``tasks``)

They differ from the core engines only in ``dispatch``: a message carries a step-run id,
and the worker that receives it calls ``process_run`` like every other backend.
"""
