"""The cluster's own sweeper: with ``DjangoQExecutionEngine``, ``manage.py qcluster`` alone
fires due timers, recovers steps whose worker died, and sends due retries and lost messages.

Every worker process of every cluster starts a sweeper thread (django-q2's ``post_spawn``
signal, sent in worker processes only). The threads elect one sweeper for the database:

- On one machine, the threads take turns through an OS file lock (``flock``) named after
  the database: one candidate per machine, the others wait without a database connection.
  The kernel releases the lock when its process dies, however it dies.
- Across machines, the candidates compete for one ``SweeperLease`` row, taken and renewed
  by a compare-and-set ``UPDATE ... WHERE expires_at < Now() OR holder = me`` on the
  database clock. The holder sweeps every ``CLUSTER_SWEEP_INTERVAL`` seconds and renews
  its lease every third of ``LEASE_TTL``; a candidate sleeps until the lease it saw runs
  out, then tries. A holder that dies stops renewing and is replaced within ``LEASE_TTL``.

A row rather than a PostgreSQL advisory lock: an advisory lock lives as long as one
connection, so the holder would have to keep a connection open forever (and lose the lock,
unknowingly, when a proxy or a transaction-mode pooler drops or swaps it), and SQLite has
none. The row works the same on every database, needs no open connection between rounds,
and the database clock decides expiry, never a machine's clock. (django-q2's scheduler and
procrastinate's periodic tasks elect the same way: every node tries, the database decides.)

Two sweeps at once are harmless (each change the sweep makes is a fenced transition), so
the lease is about load, not correctness: a holder paused longer than ``LEASE_TTL`` may
overlap one pass with its successor, nothing more.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import multiprocessing.util
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections
from django.db.models import Q
from django.db.models.functions import Now

from ..conf import workflow_settings

logger = logging.getLogger("django_workflows.sweeper")

LEASE_NAME = "django_workflows.sweep"
#: Seconds a sweeper's lease lasts unless renewed: how long the sweep may go undone after
#: the process sweeping was killed. Long enough that a busy holder (a pass over a large
#: backlog, a stalled worker) is rarely replaced; short next to ``LEASE_SECONDS`` (keep
#: that at 15 s or more), so a crash is noticed as fast with the sweeper's process killed.
LEASE_TTL = 5.0
#: A candidate waits at most this long between two tries (it usually waits until the
#: lease it saw expires), and a holder whose round failed (the database is down) retries
#: after this long.
RETRY_SECONDS = 2.0
#: How often a process waiting for its machine's turn looks at the file lock: a system
#: call, no database.
LOCAL_TURN_SECONDS = 0.25
#: How long a stopping worker waits for its sweeper to finish a pass and free the lease.
STOP_SECONDS = 10.0

_NEVER = datetime(2000, 1, 1, tzinfo=UTC)
_started: dict[int, ClusterSweeper] = {}  # pid -> the sweeper this process started
_started_lock = threading.Lock()


class ClusterSweeper:
    """A thread that sweeps while it holds the database's sweeper lease.

    ``interval`` is the seconds between two sweeps of the holder. ``local_lock`` names the
    file of the machine-wide turn (default: one per database, in the temporary directory;
    None: no machine turn, every process is a candidate).
    """

    def __init__(
        self,
        interval: float,
        *,
        name: str = LEASE_NAME,
        local_lock: str | bool | None = True,
        sweep: Any = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the sweep interval must be positive, not {interval!r}")
        self.interval = interval
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:255]
        self.local_lock = _default_lock_path() if local_lock is True else local_lock or None
        self._sweep = sweep  # a callable, for tests; default: get_engine().run_due_timers
        self.stop_event = threading.Event()
        self.holding = False
        self.thread = threading.Thread(target=self._run, name="workflow-sweeper", daemon=True)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop after the current pass and free the lease, so a successor takes it at once."""
        self.stop_event.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        turn = _LocalTurn(self.local_lock)
        try:
            while not self.stop_event.is_set():
                if turn.acquire():
                    self._compete()
                    return
                self.stop_event.wait(LOCAL_TURN_SECONDS)
        finally:
            self._release()
            turn.release()
            connections.close_all()

    def _compete(self) -> None:
        renewed = 0.0  # time.monotonic() of the last successful take or renewal
        while not self.stop_event.is_set():
            # Drop a connection that broke or outlived CONN_MAX_AGE, as Django does
            # around a request; the holder keeps a healthy one between passes.
            close_old_connections()
            wait = RETRY_SECONDS
            try:
                if not self.holding or time.monotonic() - renewed >= LEASE_TTL / 3:
                    attempt = time.monotonic()
                    self._set_holding(self._take())
                    if self.holding:
                        renewed = attempt
                if self.holding:
                    began = time.monotonic()
                    self.sweep()
                    wait = self.interval - (time.monotonic() - began)
                else:
                    wait = self._until_free()
            except Exception:
                # A database restart or a dropped connection: not the end of the sweeper.
                logger.exception("the cluster sweeper failed; it tries again")
                connections.close_all()
            self.stop_event.wait(max(wait, 0.0))

    def sweep(self) -> int:
        if self._sweep is not None:
            return self._sweep()
        from . import get_engine

        return get_engine().run_due_timers()

    # -- the lease row ------------------------------------------------------------------

    def _take(self) -> bool:
        """Take the lease if it is free or expired, or renew it if it is ours."""
        from ..models import SweeperLease

        return bool(
            SweeperLease.objects.filter(name=self.name)
            .filter(Q(expires_at__lt=Now()) | Q(holder=self.holder))
            .update(holder=self.holder, expires_at=Now() + timedelta(seconds=LEASE_TTL))
        )

    def _until_free(self) -> float:
        """Seconds (database clock, plus a little jitter) until the lease expires."""
        from ..models import SweeperLease

        row = (
            SweeperLease.objects.filter(name=self.name)
            .annotate(now=Now())
            .values_list("expires_at", "now")
            .first()
        )
        if row is None:  # a new database, or the table was emptied: make the row, try again
            SweeperLease.objects.get_or_create(
                name=self.name, defaults={"holder": "", "expires_at": _NEVER}
            )
            return 0.0
        expires_at, now = row
        # Jitter: candidates on several machines do not all try in the same millisecond.
        left = (expires_at - now).total_seconds() + random.uniform(0.0, 0.2)  # noqa: S311
        return min(max(left, 0.05), RETRY_SECONDS)

    def _release(self) -> None:
        if not self.holding:
            return
        from ..models import SweeperLease

        try:
            SweeperLease.objects.filter(name=self.name, holder=self.holder).update(
                holder="", expires_at=Now() - timedelta(seconds=1)
            )
        except Exception:
            logger.exception("freeing the sweeper lease failed; it expires by itself")
        self._set_holding(False)

    def _set_holding(self, holding: bool) -> None:
        if holding != self.holding:
            verb = "took" if holding else "gave up"
            logger.info("%s %s the sweeper lease %r", self.holder, verb, self.name)
        self.holding = holding


class _LocalTurn:
    """One candidate per machine: an exclusive ``flock`` on a file, released by the kernel
    when its process ends however it ends. Without ``fcntl`` (Windows) or without a
    usable file, every process is a candidate, which is still correct."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        if self.path is None:
            return True
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return True
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            logger.warning(
                "no machine-wide sweeper turn (%s: %s); competing anyway", self.path, exc
            )
            self.release()
            self.path = None
            return True
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # also drops the flock
            self.fd = None


def _default_lock_path() -> str:
    settings = connections[DEFAULT_DB_ALIAS].settings_dict
    key = repr((settings["ENGINE"], settings["NAME"], settings.get("HOST"), settings.get("PORT")))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"django-workflows-sweeper-{digest}.lock")


# -- the django-q2 hookup -----------------------------------------------------------------


def start_in_worker(sender: Any = None, **kwargs: Any) -> ClusterSweeper | None:
    """The ``post_spawn`` receiver: start this worker process's sweeper thread if the
    configured engine runs on django-q2 and ``CLUSTER_SWEEP_INTERVAL`` is not None.

    Never raises: an exception here would kill the worker at every spawn."""
    try:
        return _start_in_worker()
    except Exception:
        logger.exception("the cluster sweeper could not start in this worker")
        return None


def _start_in_worker() -> ClusterSweeper | None:
    from django_q.conf import Conf

    from .djangoq import DjangoQExecutionEngine

    interval = workflow_settings.CLUSTER_SWEEP_INTERVAL
    engine = workflow_settings.ENGINE
    if interval is None or not (
        isinstance(engine, type) and issubclass(engine, DjangoQExecutionEngine)
    ):
        return None
    # django-q2's sync mode runs worker() inside the calling process (a web request, a
    # test): that is not a cluster, and must not start a thread.
    if Conf.SYNC or multiprocessing.parent_process() is None:
        return None
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        logger.error(
            "DJANGO_WORKFLOWS['CLUSTER_SWEEP_INTERVAL'] must be a positive number of seconds "
            "or None, not %r: this cluster does not sweep",
            interval,
        )
        return None
    pid = os.getpid()
    with _started_lock:
        if pid in _started:
            return _started[pid]
        sweeper = ClusterSweeper(float(interval))
        _started[pid] = sweeper
    sweeper.start()
    # A worker that stops gracefully (SIGTERM to the cluster, a recycled worker) frees the
    # lease on its way out; multiprocessing runs these finalizers before the process exits.
    multiprocessing.util.Finalize(sweeper, sweeper.stop, exitpriority=10)
    return sweeper
