"""How late do timers fire on django-q2, and how soon is a killed worker's step run again?

    python benchmarks/timer_precision.py [--database-url URL] [--timers 20]
        [--intervals 1.0 0.25] [--schedule-timers 6] [--no-schedule] [--crashes 6]

For each mode it starts a ``qcluster`` (ORM broker on the benchmark database) and, for
the sweeper modes, ``manage.py workflow_sweep --loop --interval X``, as subprocesses in
their own process groups. The first mode is the cluster alone: its own sweeper
(``CLUSTER_SWEEP_INTERVAL``, default 0.5 s); the other modes turn that off
(``CLUSTER_SWEEP_INTERVAL = None``) to measure the sweep they name. Each mode starts
instances of the test app's ``worker_timer`` workflow (a machine step, a 2 s timer, a
machine step), spread evenly over a window that is a whole number of sweep periods, so
that due times fall at every phase of the sweep. Lateness is measured on the database clock:

- fired late: ``finished_at - due_at`` of the timer's step run (when the sweep fired it);
- next step: ``started_at`` of the step after the timer minus ``due_at`` (what a user
  sees: the sweep, the queue message, a worker picking it up).

The schedule mode installs the django-q2 schedule (``workflow_sweep --install-schedule``,
every minute) and runs no sweeper. The cluster's scheduler looks at schedules about every
30 s, so this mode waits for the first scheduled sweep, then spreads fewer timers over
one 60 s period (about two minutes in all).

The crash mode (``--crashes N``, 0 to skip) runs the cluster alone with
``LEASE_SECONDS = 5`` and, N times, starts an instance of ``worker_crash`` and SIGKILLs
the worker in the middle of its step. Half the rounds run on a cluster of three workers,
where the killed worker is mostly not the one sweeping; the other half on a cluster of
one worker, which also sweeps, so that the sweep must be taken over after the sweeper's
lease expires. (It never kills an idle worker: that can stop a django-q2 cluster from
taking tasks, django-q2 issue 23.) It reports the seconds from the kill to the
instance's completion (the step run again by another worker).

The database is a scratch one: a SQLite file in a temporary directory by default, or
``--database-url`` (migrated, and written to: give it an empty database). Every
subprocess is killed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import Processes, percentile, setup_django, wait_until

TIMER_SECONDS = 2.0  # the worker_timer workflow's TimerStep
CRASH_LEASE_SECONDS = 5
SCHEDULE_PERIOD = 60.0  # install_schedule(): every minute


@dataclass
class Mode:
    label: str
    timers: int
    window: float  # starts are spread over this many seconds
    deadline: float  # seconds to wait for the last instance after the last start
    interval: float | None = None  # the sweeper's --interval; None: no sweeper process
    cluster_sweep: bool = False  # the cluster's own sweeper; else the django-q2 schedule


@dataclass
class Result:
    mode: Mode
    fired: list[float]
    next_step: list[float]
    unfinished: int
    seconds: float


def run_mode(
    mode: Mode, processes: Processes, env: dict[str, str], scratch: Path, tag: str
) -> Result:
    from django.core.management import call_command
    from django.db import close_old_connections
    from django_q.models import Schedule

    from django_workflows import get_engine
    from django_workflows.engine.djangoq import SCHEDULE_NAME
    from django_workflows.models import StepRun, WorkflowInstance, WorkflowStatus

    engine = get_engine()
    folder = scratch / tag
    folder.mkdir()
    Schedule.objects.filter(name=SCHEDULE_NAME).delete()
    if not mode.cluster_sweep:
        env = {**env, "WORKFLOWS_CLUSTER_SWEEP_INTERVAL": "none"}
    if mode.interval is None and not mode.cluster_sweep:
        call_command("workflow_sweep", "--install-schedule", stdout=io.StringIO())
    installed = Schedule.objects.filter(name=SCHEDULE_NAME).values_list("next_run", flat=True)
    first_next_run = installed.first()

    processes.start(["manage.py", "qcluster"], env, f"{tag}-qcluster")
    if mode.interval is not None:
        processes.start(
            ["manage.py", "workflow_sweep", "--loop", "--interval", str(mode.interval)],
            env,
            f"{tag}-sweeper",
        )
    elif mode.cluster_sweep:
        from django_workflows.models import SweeperLease

        def elected() -> bool:
            close_old_connections()
            return SweeperLease.objects.exclude(holder="").exists()

        if not wait_until(elected, 60):
            raise SystemExit("the cluster never elected its sweeper")
    else:
        # Start measuring in the steady state: after the scheduler's first sweep.
        print(f"  {mode.label}: waiting for the scheduler's first sweep (up to ~30 s)")
        if not wait_until(lambda: installed.first() != first_next_run, 90):
            raise SystemExit("the django-q2 scheduler never ran the sweep schedule")

    started = time.monotonic()
    ids = []
    for i in range(mode.timers):
        pause = started + i * mode.window / mode.timers - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        instance = engine.start_workflow(
            "worker_timer", initial_data={"dir": str(folder)}, business_key=f"{tag}-{i}"
        )
        ids.append(instance.pk)

    def finished() -> bool:
        close_old_connections()
        return not WorkflowInstance.objects.filter(
            pk__in=ids, status__in=(WorkflowStatus.RUNNING, WorkflowStatus.WAITING)
        ).exists()

    wait_until(finished, mode.deadline)
    seconds = time.monotonic() - started
    processes.kill_all()

    fired, next_step = [], []
    for pk in ids:
        runs = {r.step_name: r for r in StepRun.objects.filter(instance_id=pk)}
        timer, end = runs.get("wait"), runs.get("end")
        if timer is not None and timer.finished_at is not None:
            fired.append((timer.finished_at - timer.due_at).total_seconds())
        if timer is not None and end is not None and end.started_at is not None:
            next_step.append((end.started_at - timer.due_at).total_seconds())
    unfinished = WorkflowInstance.objects.filter(pk__in=ids).exclude(
        status=WorkflowStatus.COMPLETED
    )
    return Result(mode, fired, next_step, unfinished.count(), seconds)


def run_crashes(
    rounds: int, processes: Processes, env: dict[str, str], scratch: Path, workers: int
) -> list[tuple[float, bool]]:
    """(seconds from the kill to completion, whether the killed worker was sweeping)."""
    from django.db import close_old_connections

    from django_workflows import get_engine
    from django_workflows.models import SweeperLease, WorkflowInstance, WorkflowStatus

    env = {**env, "WORKFLOWS_LEASE_SECONDS": str(CRASH_LEASE_SECONDS), "Q_WORKERS": str(workers)}
    processes.start(["manage.py", "qcluster"], env, f"crash-qcluster-{workers}")
    engine = get_engine()

    def holder_pid() -> int | None:
        close_old_connections()
        holder = SweeperLease.objects.values_list("holder", flat=True).first()
        return int(holder.rsplit(":", 2)[1]) if holder else None

    results = []
    for index in range(rounds):
        folder = scratch / f"crash{workers}-{index}"
        folder.mkdir()
        instance = engine.start_workflow("worker_crash", initial_data={"dir": str(folder)})
        started = folder / "hang.started"
        if not wait_until(started.exists, 60) or not wait_until(holder_pid, 60):
            raise SystemExit("the step never started, or the cluster never elected a sweeper")
        worker = int(started.read_text().split()[0])
        sweeping = holder_pid() == worker
        killed = time.monotonic()
        os.kill(worker, signal.SIGKILL)

        def done(pk=instance.pk) -> bool:
            close_old_connections()
            return WorkflowInstance.objects.get(pk=pk).status == WorkflowStatus.COMPLETED

        if not wait_until(done, 120, interval=0.02):
            raise SystemExit(f"round {index}: the step was never run again")
        results.append((time.monotonic() - killed, sweeping))
    processes.kill_all()
    return results


def print_crashes(results: list[tuple[float, bool]]) -> None:
    print()
    lease = CRASH_LEASE_SECONDS
    print(f"Crash recovery, seconds from SIGKILL to completion (LEASE_SECONDS = {lease})")
    print()
    print("| killed | rounds | min | p50 | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, with_sweeper in (
        ("a worker that was not sweeping", False),
        ("the worker that was sweeping", True),
    ):
        values = [seconds for seconds, swept in results if swept == with_sweeper]
        if values:
            print(
                f"| {label} | {len(values)} | {min(values):.2f} | "
                f"{percentile(values, 50):.2f} | {max(values):.2f} |"
            )


def print_table(results: list[Result], database: str) -> None:
    print()
    print(
        f"Timer lateness, seconds (django-q2 ORM broker on {database}; "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs)"
    )
    print()
    print("| sweep | timers | fired late: min | p50 | p95 | max | next step started: p50 | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        if not r.fired:
            print(f"| {r.mode.label} | {r.mode.timers} | no timer fired |")
            continue
        cells = [
            f"{percentile(r.fired, 0):.2f}",
            f"{percentile(r.fired, 50):.2f}",
            f"{percentile(r.fired, 95):.2f}",
            f"{max(r.fired):.2f}",
            f"{percentile(r.next_step, 50):.2f}" if r.next_step else "-",
            f"{max(r.next_step):.2f}" if r.next_step else "-",
        ]
        timers = f"{len(r.fired)}" + (f" ({r.unfinished} unfinished)" if r.unfinished else "")
        print(f"| {r.mode.label} | {timers} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a scratch database (default: a SQLite file)")
    parser.add_argument("--timers", type=int, default=20, help="timers per sweeper mode")
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--schedule-timers", type=int, default=6)
    parser.add_argument("--no-schedule", action="store_true", help="skip the ~2 min mode")
    parser.add_argument("--workers", type=int, default=2, help="qcluster workers")
    parser.add_argument("--crashes", type=int, default=6, help="crash rounds (0: none)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="timer-precision-"))
    database_url = args.database_url or f"sqlite:///{scratch / 'bench.sqlite3'}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WORKFLOWS_ENGINE": "djangoq",
        "Q_NAME": f"timer-bench-{os.getpid()}",
        "Q_WORKERS": str(args.workers),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("Q_BROKER", None)  # the ORM broker, on the benchmark database
    setup_django(database_url, env)
    logging.getLogger("django-q").setLevel(logging.WARNING)  # not a line per message
    from django.db import connection

    modes = [
        Mode(
            "qcluster alone (its own sweeper, every 0.5 s)",
            timers=args.timers,
            window=5.0,
            deadline=30.0,
            cluster_sweep=True,
        ),
    ]
    modes += [
        Mode(
            f"`workflow_sweep --loop --interval {interval:g}`",
            timers=args.timers,
            window=max(5.0, 4 * interval),
            deadline=30 + 4 * interval,
            interval=interval,
        )
        for interval in args.intervals
    ]
    if not args.no_schedule:
        modes.append(
            Mode(
                "django-q2 schedule (every minute), no sweeper",
                timers=args.schedule_timers,
                window=SCHEDULE_PERIOD,
                deadline=2 * SCHEDULE_PERIOD + 30,
            )
        )

    processes = Processes(scratch)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results = []
    try:
        for index, mode in enumerate(modes):
            print(f"running: {mode.label}, {mode.timers} timers over {mode.window:g} s")
            results.append(run_mode(mode, processes, env, scratch, f"mode{index}"))
        crashes = []
        if args.crashes:
            print(f"running: {args.crashes} crashes")
            crashes = run_crashes(args.crashes - args.crashes // 2, processes, env, scratch, 3)
            crashes += run_crashes(args.crashes // 2, processes, env, scratch, 1)
    finally:
        processes.kill_all()
    print_table(results, f"{connection.vendor}")
    if crashes:
        print_crashes(crashes)
    print(f"\nlogs: {scratch}")


if __name__ == "__main__":
    main()
