from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .core import BaseExecutionEngine


class LocalExecutionEngine(BaseExecutionEngine):
    """Runs machine steps in the calling process, right after the transition that queued them.

    ``start_workflow`` and ``complete_human_task`` return once the instance has
    gone as far as it can: completed, failed, or waiting for a person or a timer.
    Parallel branches run one after another. Call ``run_due_timers()`` (from cron,
    or a management command) to fire timers and delayed retries.
    """

    def dispatch(self, run_ids: Iterable[int]) -> None:
        pending = deque(run_ids)
        while pending:
            pending.extend(self.process_run(pending.popleft()))
