"""Engines for fault-injection tests (tests/reliability)."""

from django_workflows.engine.djangoq import DjangoQExecutionEngine


class DuplicatingDjangoQEngine(DjangoQExecutionEngine):
    """Sends every message twice: a broker that delivers each message at least twice.

    Select it in worker processes with ``WORKFLOWS_ENGINE_CLASS`` (testproject.settings).
    """

    def dispatch(self, run_ids):
        super().dispatch([run_id for run_id in run_ids for _copy in range(2)])


class SweepRecordingEngine(DjangoQExecutionEngine):
    """Appends ``<pid> <start> <end>`` (``time.time()``) to the file ``WORKFLOWS_SWEEP_LOG``
    names for every sweep: which processes swept, and when (tests/worker)."""

    def run_due_timers(self, limit=500):
        import os
        import time

        began = time.time()
        try:
            return super().run_due_timers(limit)
        finally:
            line = f"{os.getpid()} {began:.6f} {time.time():.6f}\n"
            with open(os.environ["WORKFLOWS_SWEEP_LOG"], "a") as log:
                log.write(line)
