"""Fault injection: the worker fixtures of tests/worker, plus helpers to hurt them.

Everything here waits on conditions with deadlines; faults are injected while the
workflows run, never by sleeping and hoping.
"""

import itertools
import logging
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db.models import Count

from django_workflows import WorkflowStatus
from django_workflows.models import ACTIVE_INSTANCE_STATUSES, StepRun, WorkflowInstance
from testproject.testapp.models import SideEffect

from ..processes import wait_for
from ..worker import conftest as _worker

# The worker fixtures (a qcluster and the sweeper in subprocesses), for this directory too.
worker_env = _worker.worker_env
start_process = _worker.start_process
q_engine = _worker.q_engine

__all__ = ["wait_for"]

#: Short leases: a killed worker's step is taken over after two seconds.
LEASE_SECONDS = 2


@pytest.fixture
def fault_env(worker_env):
    """The worker environment with short leases and more workers (steps mostly sleep)."""
    return {
        **worker_env,
        "WORKFLOWS_LEASE_SECONDS": str(LEASE_SECONDS),
        "WORKFLOWS_STALE_QUEUED_SECONDS": "2",
        # Workers are killed every second or so: a step may lose many workers in a row,
        # which is the chaos being tested, not a step that kills its worker.
        "WORKFLOWS_CRASH_LIMIT": "50",
        "Q_WORKERS": "5",
    }


def sweep_args(interval=0.25):
    return ["workflow_sweep", "--loop", "--interval", str(interval)]


# -- processes ------------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """The direct children of ``pid`` (from /proc; every thread's children)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``: for a qcluster, its sentinel, workers, pusher, monitor."""
    seen: set[int] = set()
    stack = [pid]
    while stack:
        for child in children(stack.pop()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def pid_mid_step(cluster_pid: int, margin: float = 0.1) -> int | None:
    """The pid of a cluster worker that is inside a step's body right now, and will still be
    for ``margin`` seconds (its SideEffect row is open and its planned sleep not over).

    Killing a worker outside a step could kill it while it holds the lock of django-q's
    multiprocessing task queue (an idle worker blocks in ``get()`` holding it), which
    would hang every other worker: a django-q hazard, not what these tests are about.
    """
    rows = SideEffect.objects.filter(finished_at__isnull=True).order_by("-id")[:50]
    now = time.time()
    candidates = [
        row.pid for row in rows if row.started_at.timestamp() + row.planned - now > margin
    ]
    if not candidates:
        return None
    below = descendants(cluster_pid)
    for pid in candidates:
        if pid in below:  # still ours (never a recycled pid of another process)
            return pid
    return None


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# -- waiting and checking --------------------------------------------------------------------


def active_count(ids) -> int:
    return WorkflowInstance.objects.filter(pk__in=ids, status__in=ACTIVE_INSTANCE_STATUSES).count()


def wait_finished(ids, timeout, processes=()):
    """Wait until none of the instances is active; then assert they all completed."""
    ids = list(ids)

    def done():
        return active_count(ids) == 0

    try:
        wait_for(done, timeout, interval=0.2, message=f"{len(ids)} instances to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe(ids, processes)}") from None
    not_completed = WorkflowInstance.objects.filter(pk__in=ids).exclude(
        status=WorkflowStatus.COMPLETED
    )
    assert not not_completed.exists(), describe(ids, processes)


def describe(ids, processes=()) -> str:
    """What went wrong: statuses, unfinished runs, errors and the tail of the process logs."""
    statuses = dict(
        WorkflowInstance.objects.filter(pk__in=ids)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    runs = list(
        StepRun.objects.filter(instance_id__in=ids)
        .exclude(status="completed")
        .values_list("instance_id", "step_name", "status", "attempt", "error")[:10]
    )
    errors = list(
        WorkflowInstance.objects.filter(pk__in=ids, status=WorkflowStatus.FAILED).values_list(
            "error", flat=True
        )[:5]
    )
    logs = "\n".join(f"--- {p.log.name}\n{p.output()[-3000:]}" for p in processes)
    return f"statuses {statuses}\nnot completed runs {runs}\nerrors {errors}\n{logs}"


def check_side_effects(ids, steps, *, every_attempt=True):
    """Every committed step's attempt really ran to its end, and each attempt ran once
    (with ``every_attempt``: each attempt left its row; without, when a fault may strike
    before the step's body writes it, at most once).

    Returns the SideEffect rows left unfinished (executions cut short)."""
    effects: dict[tuple[str, str], list[SideEffect]] = {}
    for row in SideEffect.objects.filter(instance_id__in=ids):
        effects.setdefault((str(row.instance_id), row.step), []).append(row)
    runs = StepRun.objects.filter(instance_id__in=ids).values_list(
        "instance_id", "step_name", "status", "attempt"
    )
    seen = set()
    for instance_id, step, status, attempt in runs:
        key = (str(instance_id), step)
        assert key not in seen, f"{key}: more than one run of the step"
        seen.add(key)
        assert status == "completed", (key, status)
        rows = effects.get(key, [])
        attempts = sorted(row.attempt for row in rows)
        message = f"{key}: executions of attempts {attempts}; the run was claimed {attempt} times"
        if every_attempt:
            assert attempts == list(range(1, attempt + 1)), message
        else:
            assert len(set(attempts)) == len(attempts), message
            assert set(attempts) <= set(range(1, attempt + 1)), message
        final = next(row for row in rows if row.attempt == attempt)
        assert final.finished_at is not None, f"{key}: the committed attempt never finished"
    assert seen == {(str(i), s) for i in ids for s in steps}
    return [row for rows in effects.values() for row in rows if row.finished_at is None]


def no_overlap(rows):
    """Executions of one step of one instance never run at the same time."""
    by_key: dict[tuple[str, str], list[SideEffect]] = {}
    for row in rows:
        by_key.setdefault((str(row.instance_id), row.step), []).append(row)
    for key, executions in by_key.items():
        executions.sort(key=lambda row: row.started_at)
        for earlier, later in itertools.pairwise(executions):
            end = earlier.finished_at or datetime.max.replace(tzinfo=UTC)
            assert end <= later.started_at, (
                f"{key}: attempt {earlier.attempt} ran {earlier.started_at}..{end}, "
                f"attempt {later.attempt} started at {later.started_at}"
            )


@pytest.fixture(autouse=True)
def _quiet_enqueue_log():
    """django-q logs every message the test process sends at INFO: hundreds of lines."""
    logger = logging.getLogger("django-q")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.fixture
def hook():
    """An event bus calling ``hook.on_event(event)`` after each transition commits."""
    from .helpers import Hook

    return Hook()


@pytest.fixture
def local_engine(hook):
    """A LocalExecutionEngine on the race workflows of ``helpers``."""
    from django_workflows import LocalExecutionEngine

    from .helpers import build_registry

    return LocalExecutionEngine(build_registry(), event_bus=hook)


@pytest.fixture
def queueing_engine():
    """An engine on the race workflows whose queue the test reads (``take()``)."""
    from .helpers import QueueingEngine, build_registry

    return QueueingEngine(build_registry())
