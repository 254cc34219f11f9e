"""Nothing but ``qcluster``: no ``workflow_sweep`` process, no django-q2 schedule. The
cluster's own sweeper recovers crashed steps and fires timers, one process at a time."""

import itertools
import os
import signal
import time
from pathlib import Path

import pytest
from django_q.models import Schedule

from django_workflows import WorkflowStatus
from django_workflows.engine.sweeper import LEASE_NAME, LEASE_TTL
from django_workflows.models import StepRun, SweeperLease, WorkflowInstance

from .conftest import LEASE_SECONDS, wait_for

pytestmark = pytest.mark.worker

#: Seconds on top of the lease for the sweep to notice (an interval), send the run again
#: and a worker to take it (a poll), on a busy two-CPU machine.
SLACK = 3.0


def wait_status(instance_id, status, timeout):
    def current():
        return WorkflowInstance.objects.get(pk=instance_id).status

    wait_for(lambda: current() == status, timeout, message=f"instance to be {status}")
    return WorkflowInstance.objects.get(pk=instance_id)


def holder_pid() -> int | None:
    holder = SweeperLease.objects.filter(name=LEASE_NAME).values_list("holder", flat=True).first()
    return int(holder.rsplit(":", 2)[1]) if holder else None


def in_group(pid: int, process) -> bool:
    """``pid`` is one of the processes of ``process`` (a cluster in a session of its own)."""
    try:
        return os.getpgid(pid) == process.popen.pid
    except ProcessLookupError:
        return False


def test_only_qcluster_reruns_the_step_of_a_killed_worker(q_engine, cluster, tmp_path):
    instance = q_engine.start_workflow("worker_crash", initial_data={"dir": str(tmp_path)})
    started = tmp_path / "hang.started"
    wait_for(started.exists, message="the step to start")
    worker_pid = int(started.read_text().split()[0])
    sweeper_pid = wait_for(holder_pid, timeout=30, message="the cluster to elect its sweeper")
    assert in_group(sweeper_pid, cluster)

    killed = time.monotonic()
    os.kill(worker_pid, signal.SIGKILL)  # mid-step: the lease is no longer renewed

    # If the killed worker was also the one sweeping, another takes the sweep over after
    # the sweeper's lease (LEASE_TTL) expires; otherwise the step's lease is all it waits.
    waits = max(LEASE_SECONDS, LEASE_TTL) if worker_pid == sweeper_pid else LEASE_SECONDS
    instance = wait_status(instance.pk, WorkflowStatus.COMPLETED, timeout=waits + 60)
    recovered = time.monotonic() - killed
    assert recovered < waits + SLACK, f"recovered {recovered:.1f} s after the kill"

    run = instance.step_runs.get(step_name="hang")
    assert (run.status, run.attempt) == ("completed", 2)
    assert instance.context["hang"]["pid"] != worker_pid
    assert not Schedule.objects.exists()  # nothing but the cluster did it


def test_only_qcluster_fires_timers_within_a_second(q_engine, cluster, tmp_path):
    wait_for(holder_pid, timeout=30, message="the cluster to elect its sweeper")
    ids = [
        q_engine.start_workflow("worker_timer", initial_data={"dir": str(tmp_path)}).pk
        for _ in range(5)
    ]
    for pk in ids:
        wait_status(pk, WorkflowStatus.COMPLETED, timeout=60)

    late = {
        run.instance_id: (run.finished_at - run.due_at).total_seconds()
        for run in StepRun.objects.filter(instance_id__in=ids, step_name="wait")
    }
    assert len(late) == len(ids)
    assert all(0 <= seconds < 1.0 for seconds in late.values()), late
    assert not Schedule.objects.exists()


def sweeps(log: Path) -> list[tuple[int, float, float]]:
    """(pid, start, end) of every finished sweep, by start (SweepRecordingEngine)."""
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
    return sorted(((int(p), float(s), float(e)) for p, s, e in rows), key=lambda r: r[1])


def test_two_clusters_on_two_machines_sweep_one_at_a_time_and_take_over(
    worker_env, start_process, tmp_path
):
    log = tmp_path / "sweeps.log"
    env = {
        **worker_env,
        "WORKFLOWS_ENGINE_CLASS": "testproject.testapp.engines.SweepRecordingEngine",
        "WORKFLOWS_SWEEP_LOG": str(log),
        "Q_WORKERS": "2",
    }
    # Another temporary directory is another machine: the two clusters do not share the
    # machine-wide turn (a file lock), so their candidates meet at the database lease.
    machine_b = tmp_path / "machine-b"
    machine_b.mkdir()
    clusters = [
        start_process(["qcluster"], env, "qcluster-a"),
        start_process(["qcluster"], {**env, "TMPDIR": str(machine_b)}, "qcluster-b"),
    ]

    def ready(process):
        return process.output().count("ready for work") >= 2

    wait_for(lambda: all(ready(c) for c in clusters), message="both clusters' workers")
    both_up = time.time()
    # Long enough for every candidate of both clusters to have tried the lease: a
    # candidate tries again at the latest every RETRY_SECONDS (2 s).
    wait_for(
        lambda: any(start > both_up + 4 for _, start, _ in sweeps(log)),
        timeout=60,
        message="sweeps after both clusters were up",
    )
    before = sweeps(log)
    swept_by = {pid for pid, start, _ in before if start > both_up}
    assert len(swept_by) == 1, f"{len(swept_by)} processes swept at once: {swept_by}"
    (sweeper_pid,) = swept_by
    holder = next(c for c in clusters if in_group(sweeper_pid, c))
    other = next(c for c in clusters if c is not holder)
    assert holder_pid() == sweeper_pid

    killed = time.time()
    holder.kill()  # SIGKILL to the whole cluster: nobody frees the lease

    def taken_over():
        return [row for row in sweeps(log) if row[1] > killed]

    wait_for(taken_over, timeout=LEASE_TTL + 30, message="the other cluster to take over")
    pid, start, _ = taken_over()[0]
    assert in_group(pid, other)
    assert start - killed < LEASE_TTL + 1.5, f"taken over {start - killed:.1f} s after the kill"
    assert holder_pid() == pid

    # Never two sweeps at once, before or after the takeover.
    rows = sweeps(log)
    for (pid_a, _, end_a), (pid_b, start_b, _) in itertools.pairwise(rows):
        if pid_a != pid_b:
            assert start_b >= end_a, f"{pid_a} and {pid_b} swept at the same time"


def test_a_stopped_cluster_hands_the_sweep_over_at_once(worker_env, start_process, tmp_path):
    """SIGTERM (a deploy): the workers finish, the sweeper frees its lease on the way out,
    and a cluster on another machine takes it without waiting for it to expire."""
    log = tmp_path / "sweeps.log"
    env = {
        **worker_env,
        "WORKFLOWS_ENGINE_CLASS": "testproject.testapp.engines.SweepRecordingEngine",
        "WORKFLOWS_SWEEP_LOG": str(log),
        "Q_WORKERS": "1",
    }
    first = start_process(["qcluster"], env, "qcluster-a")
    wait_for(lambda: sweeps(log), message="the first cluster to sweep")
    machine_b = tmp_path / "machine-b"
    machine_b.mkdir()
    second = start_process(["qcluster"], {**env, "TMPDIR": str(machine_b)}, "qcluster-b")
    wait_for(lambda: "ready for work" in second.output(), message="the second cluster")

    stopped = time.time()
    first.popen.send_signal(signal.SIGTERM)
    first.popen.wait(30)
    assert "has stopped" in first.output()

    def taken_over():
        return [row for row in sweeps(log) if row[1] > stopped and in_group(row[0], second)]

    wait_for(taken_over, timeout=30, message="the second cluster to take over")
    # A freed lease is taken at the candidate's next try (at most RETRY_SECONDS), not
    # after LEASE_TTL.
    assert taken_over()[0][1] - stopped < 2.0 + 1.5
