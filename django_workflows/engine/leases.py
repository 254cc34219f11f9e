"""Leases: which worker holds a running step run, until when, and the one filter that
fences every write of a run's outcome.

A claim gives a run a fresh lease token (``new_lease``); every later write for that
run goes through ``fenced(run_id, token)``, so a worker that lost its lease (it was
slow, or cut off, and the sweep gave the run to another) changes nothing. The
process's lease keeper renews the leases of the steps it is executing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.functions import Now

from ..conf import workflow_settings
from ..models import StepRun, StepRunStatus

logger = logging.getLogger("django_workflows.engine")


def worker_id() -> str:
    """host:pid of this process, read when a run is claimed (a forked worker has its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_expiry() -> Any:
    """When a lease taken or renewed now runs out, on the database clock."""
    return Now() + timedelta(seconds=workflow_settings.LEASE_SECONDS)


def new_lease(token: uuid.UUID) -> dict[str, Any]:
    """The run's fields of a fresh claim under ``token``."""
    return {
        "lease_token": token,
        "lease_expires_at": lease_expiry(),
        "started_at": Now(),
        "worker": worker_id(),
    }


def fenced(run_id: int, token: uuid.UUID | None) -> QuerySet[StepRun]:
    """The run, only while it is RUNNING under ``token``: the lease check, written once.

    Every write of a run's outcome (finish, fail, renew, recover) filters through it.
    """
    return StepRun.objects.filter(pk=run_id, status=StepRunStatus.RUNNING, lease_token=token)


def lost_lease(run_id: int) -> None:
    logger.warning("step run %s lost its lease; its result is discarded", run_id)


class LeaseKeeper:
    """One thread per process renews the leases of the steps the process is executing,
    every third of ``LEASE_SECONDS``, so a long step is not taken over while its worker
    is alive. A killed worker stops renewing, and its leases run out. (One shared
    thread: starting a thread per step costs more than a short step.)"""

    def __init__(self) -> None:
        self.held: dict[int, tuple[uuid.UUID, float]] = {}  # run id -> (token, last renewal)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.wake = threading.Event()  # LEASE_SECONDS went down: re-read it, beat on time
        # Held while a beat uses the database, until its connection is closed again.
        self.beating = threading.Lock()
        self.lease = 0.0  # the LEASE_SECONDS the thread's timer was last set from

    def hold(self, run_id: int, token: uuid.UUID) -> None:
        lease = workflow_settings.LEASE_SECONDS
        with self.lock:
            self.held[run_id] = (token, time.monotonic())
            # After a fork (a django-q2 worker) the parent's thread does not exist here.
            if self.thread is None or not self.thread.is_alive() or self.pid != os.getpid():
                self.pid = os.getpid()
                self.lease = lease
                self.thread = threading.Thread(
                    target=self._loop, name="workflow-leases", daemon=True
                )
                self.thread.start()
                return
            shorter = lease < self.lease
            self.lease = lease
        # The thread's own timer (a sixth of a lease, at most 1 s) renews a new run in
        # time; it needs waking (a wake-up per step costs a thread switch) only when the
        # lease got shorter than the one it sleeps for.
        if shorter:
            self.wake.set()

    def release(self, run_id: int) -> None:
        with self.lock:
            self.held.pop(run_id, None)
        # A beat in flight ends (its connection closed) before the step's caller goes on,
        # so no thread of the engine holds a connection once a step has returned. Bounded:
        # a renewal stuck behind a caller's row lock must not hang the step.
        if self.beating.acquire(timeout=RELEASE_WAIT_SECONDS):
            self.beating.release()

    def holds(self, run_id: int) -> bool:
        return run_id in self.held

    def _loop(self) -> None:
        while True:
            lease = workflow_settings.LEASE_SECONDS
            with self.lock:
                self.lease = lease
            self.wake.wait(min(lease / 6, 1.0))
            self.wake.clear()
            now = time.monotonic()
            with self.beating:  # taken before ``due``: a run released after it is not in it
                with self.lock:
                    due = [
                        (run_id, token)
                        for run_id, (token, renewed) in self.held.items()
                        if now - renewed >= lease / 3
                    ]
                for run_id, token in due:
                    self._renew(run_id, token, lease)
                if due:  # a beat is rare (a third of a lease): hold no connection in between
                    connections.close_all()

    def _renew(self, run_id: int, token: uuid.UUID, lease: float) -> None:
        try:
            renewed = fenced(run_id, token).update(
                lease_expires_at=Now() + timedelta(seconds=lease)
            )
        except Exception:
            # A dropped connection or a database restart: try again at the next beat, on
            # a fresh connection, while the lease may still be saved.
            logger.exception("renewing the lease of step run %s failed", run_id)
            connections.close_all()
            return
        with self.lock:
            if not renewed:  # canceled or taken over: nothing left to keep alive
                self.held.pop(run_id, None)
            elif run_id in self.held:
                self.held[run_id] = (token, time.monotonic())


#: How long releasing a run waits for a lease renewal in flight to finish.
RELEASE_WAIT_SECONDS = 5.0

lease_keeper = LeaseKeeper()


class Heartbeat:
    """Keeps the lease of a run alive while its step executes (``with`` block)."""

    def __init__(self, run_id: int, token: uuid.UUID) -> None:
        self.run_id, self.token = run_id, token

    def __enter__(self) -> Heartbeat:
        lease_keeper.hold(self.run_id, self.token)
        return self

    def __exit__(self, *exc_info: object) -> None:
        lease_keeper.release(self.run_id)
