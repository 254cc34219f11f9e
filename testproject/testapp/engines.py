"""Engines for fault-injection tests (tests/reliability)."""

from django_workflows.engine.djangoq import DjangoQExecutionEngine


class DuplicatingDjangoQEngine(DjangoQExecutionEngine):
    """Sends every message twice: a broker that delivers each message at least twice.

    Select it in worker processes with ``WORKFLOWS_ENGINE_CLASS`` (testproject.settings).
    """

    def dispatch(self, run_ids):
        super().dispatch([run_id for run_id in run_ids for _copy in range(2)])
