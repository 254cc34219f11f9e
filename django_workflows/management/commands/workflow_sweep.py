import argparse
import math
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from django_workflows.conf import workflow_settings
from django_workflows.engine import get_engine, retention

#: The longest ``--interval``: a day (a sweeper sleeping longer fires no timer).
MAX_INTERVAL = 86400.0


def interval(value: str) -> float:
    """``--interval``: a finite number of seconds, more than 0 and at most a day (an
    argparse type: ``inf``, ``nan``, ``0`` are usage errors)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_INTERVAL):
        raise argparse.ArgumentTypeError(
            f"{value} is not a number of seconds more than 0 and at most {MAX_INTERVAL:g}"
        )
    return seconds


class Command(BaseCommand):
    help = (
        "Fire due timers, recover steps whose worker died, and re-send lost messages. "
        "Once, in a loop (--loop, for second-level timer precision), or install the "
        "django-q2 schedule that runs it every minute (--install-schedule). Not needed "
        "with DjangoQExecutionEngine: qcluster sweeps by itself (CLUSTER_SWEEP_INTERVAL)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--loop", action="store_true", help="Sweep every --interval seconds.")
        mode.add_argument(
            "--install-schedule",
            action="store_true",
            help="Create the django-q2 schedule running the sweep every minute.",
        )
        parser.add_argument(
            "--interval",
            type=interval,
            default=None,
            metavar="SECONDS",
            help=f"With --loop: seconds between sweeps (default 1, more than 0, at most "
            f"{MAX_INTERVAL:g}).",
        )

    def handle(self, *args, **options) -> None:
        if options["interval"] is None:
            options["interval"] = 1.0
        elif not options["loop"]:  # silently sweeping once would hide the mistake
            raise CommandError("--interval needs --loop")
        if options["install_schedule"]:
            from django_workflows.engine.djangoq import install_schedule

            schedule, created = install_schedule()
            verb = "created" if created else "updated"
            self.stdout.write(self.style.SUCCESS(f"{verb} django-q2 schedule {schedule.name!r}"))
            return
        engine = get_engine()
        if not options["loop"]:
            self.stdout.write(self._sweep(engine))
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        if options["verbosity"] > 0:
            self.stdout.write(f"sweeping every {options['interval']}s; stop with Ctrl-C")
        while not stop.is_set():
            close_old_connections()
            try:
                line = self._sweep(engine)
                if line != "handled 0" and options["verbosity"] > 1:
                    self.stdout.write(line)
            except Exception as exc:  # a database restart must not end the sweeper
                self.stderr.write(f"sweep failed: {exc}")
            stop.wait(options["interval"])

    def _sweep(self, engine: Any) -> str:
        """One sweep, and what it did: ``handled N``, with ``RETENTION`` set
        ``handled N, purged M`` (finished instances deleted)."""
        with retention.tally() as purged:
            handled = engine.run_due_timers()
        if workflow_settings.RETENTION is None:
            return f"handled {handled}"
        return f"handled {handled}, purged {purged.purged}"
