"""Helpers the test modules share: threads released at once, an engine a test drives."""

import threading

from django.db import connections

from django_workflows.engine.base import BaseExecutionEngine

#: Seconds any wait in a test may take before it counts as hung.
TIMEOUT = 30


def in_threads(*targets):
    """Run each target in its own thread, all released at once; results or exceptions."""
    barrier = threading.Barrier(len(targets))
    results: list = [None] * len(targets)

    def runner(index, target):
        try:
            barrier.wait(TIMEOUT)
            results[index] = target()
        except Exception as exc:
            results[index] = exc
        finally:
            connections.close_all()  # each thread has its own connection

    threads = [threading.Thread(target=runner, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a thread did not finish in time"
    return results


class QueueingEngine(BaseExecutionEngine):
    """Collects the runs it is given to dispatch, so that a test plays the workers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.queued: list[int] = []

    def dispatch(self, run_ids):
        self.queued.extend(run_ids)

    def take(self) -> list[int]:
        queued, self.queued = self.queued, []
        return queued
