"""The cluster sweeper's election, in this process: the lease row, the machine-wide turn,
and when ``post_spawn`` starts a sweeper. The real clusters are in test_cluster_sweeper."""

import threading
import time
from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.test import override_settings

from django_workflows.engine import sweeper as sweeper_module
from django_workflows.engine.sweeper import LEASE_NAME, LEASE_TTL, ClusterSweeper, _LocalTurn
from django_workflows.models import SweeperLease

from .conftest import wait_for

DJANGOQ = {"ENGINE": "django_workflows.engine.djangoq.DjangoQExecutionEngine"}

pytestmark = pytest.mark.usefixtures("transactional_db")  # the threads commit


class Counter:
    """A sweep that counts its calls per sweeper and notes when two overlap."""

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.running = 0
        self.overlaps = 0
        self.lock = threading.Lock()

    def sweep_for(self, name):
        def sweep():
            with self.lock:
                self.calls[name] = self.calls.get(name, 0) + 1
                self.running += 1
                self.overlaps += self.running > 1
            time.sleep(0.01)
            with self.lock:
                self.running -= 1
            return 0

        return sweep


@pytest.fixture
def sweepers():
    started = []

    def make(name, counter, **kwargs):
        sweeper = ClusterSweeper(0.05, local_lock=None, sweep=counter.sweep_for(name), **kwargs)
        started.append(sweeper)
        return sweeper

    yield make
    for sweeper in started:
        sweeper.stop()


def lease():
    return SweeperLease.objects.get(name=LEASE_NAME)


def test_one_of_two_sweepers_sweeps_and_the_other_takes_over_when_it_stops(sweepers):
    counter = Counter()
    first, second = sweepers("first", counter), sweepers("second", counter)
    first.start()
    wait_for(lambda: counter.calls.get("first", 0) >= 3, timeout=10, message="first to sweep")
    second.start()
    # The second has looked at the lease (made the row, found it held) and keeps waiting.
    wait_for(lambda: counter.calls["first"] >= 30, timeout=20, message="thirty sweeps")
    assert "second" not in counter.calls
    assert lease().holder == first.holder
    assert first.holding and not second.holding

    stopped = time.monotonic()
    first.stop()  # a graceful stop frees the lease: no need to wait for it to expire
    assert not first.thread.is_alive()
    wait_for(lambda: counter.calls.get("second"), timeout=10, message="second to take over")
    assert time.monotonic() - stopped < sweeper_module.RETRY_SECONDS + 1
    assert lease().holder == second.holder
    assert counter.overlaps == 0


def test_an_expired_lease_of_a_dead_holder_is_taken_on_the_database_clock(sweepers):
    # Somebody on another machine holds it, and stops renewing (it died).
    SweeperLease.objects.create(
        name=LEASE_NAME, holder="elsewhere:1:dead", expires_at=Now() + timedelta(seconds=1.5)
    )
    counter = Counter()
    mine = sweepers("mine", counter)
    began = time.monotonic()
    mine.start()
    wait_for(lambda: counter.calls.get("mine"), timeout=10, message="the takeover")
    waited = time.monotonic() - began
    assert 1.0 < waited < 1.5 + 1.0  # not before it expired, and soon after
    assert lease().holder == mine.holder


def test_a_live_holder_renews_its_lease(sweepers):
    counter = Counter()
    mine = sweepers("mine", counter)
    mine.start()
    wait_for(lambda: counter.calls.get("mine"), timeout=10, message="a sweep")
    first = lease().expires_at
    wait_for(lambda: lease().expires_at > first, timeout=LEASE_TTL, message="a renewal")
    # Renewed well before it ran out: nobody else could have taken it meanwhile.
    assert SweeperLease.objects.filter(name=LEASE_NAME, expires_at__gt=Now()).exists()


def test_a_failing_sweep_is_logged_and_the_sweeper_goes_on(sweepers, caplog):
    calls = []

    def sweep():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return 0

    mine = ClusterSweeper(0.05, local_lock=None, sweep=sweep)
    mine.start()
    try:
        wait_for(lambda: len(calls) >= 2, timeout=sweeper_module.RETRY_SECONDS + 5)
    finally:
        mine.stop()
    assert "the cluster sweeper failed" in caplog.text
    assert "the database went away" in caplog.text


def test_the_machine_turn_admits_one_process_at_a_time(tmp_path):
    path = str(tmp_path / "turn.lock")
    first, second = _LocalTurn(path), _LocalTurn(path)
    assert first.acquire()
    assert not second.acquire()  # flock is per open file: a second open waits its turn
    first.release()
    assert second.acquire()
    second.release()


def test_an_unusable_lock_file_means_competing_without_a_turn(tmp_path, caplog):
    turn = _LocalTurn(str(tmp_path / "missing-directory" / "turn.lock"))
    assert turn.acquire()
    assert turn.path is None
    assert "no machine-wide sweeper turn" in caplog.text


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError, match="must be positive"):
        ClusterSweeper(0)


# -- when post_spawn starts one --------------------------------------------------------------


@pytest.fixture
def in_a_worker(monkeypatch):
    """Pretend this process is a qcluster worker (a child process, not django-q2 sync)."""
    monkeypatch.setattr(sweeper_module.multiprocessing, "parent_process", lambda: object())
    started = []

    class Recording(ClusterSweeper):
        def start(self):
            started.append(self)

    monkeypatch.setattr(sweeper_module, "ClusterSweeper", Recording)
    monkeypatch.setattr(sweeper_module, "_started", {})
    return started


def spawn():
    from django_q.signals import post_spawn

    post_spawn.send(sender="django_q", proc_name="Process-test")


def test_a_djangoq_worker_starts_one_sweeper(in_a_worker):
    with override_settings(DJANGO_WORKFLOWS=DJANGOQ):
        spawn()
        spawn()  # once per process
    assert len(in_a_worker) == 1
    assert in_a_worker[0].interval == 0.5


@pytest.mark.parametrize(
    "workflows",
    [
        {},  # the local engine: nothing runs on the cluster
        {**DJANGOQ, "CLUSTER_SWEEP_INTERVAL": None},  # turned off
        {**DJANGOQ, "CLUSTER_SWEEP_INTERVAL": 0},  # wrong: logged, not started
        {**DJANGOQ, "CLUSTER_SWEEP_INTERVAL": "1"},
    ],
)
def test_no_sweeper_without_the_djangoq_engine_or_when_turned_off(in_a_worker, workflows):
    with override_settings(DJANGO_WORKFLOWS=workflows):
        spawn()
    assert in_a_worker == []


def test_a_wrong_interval_is_reported(in_a_worker, caplog):
    with override_settings(DJANGO_WORKFLOWS={**DJANGOQ, "CLUSTER_SWEEP_INTERVAL": -1}):
        spawn()
    assert "must be a positive number of seconds or None, not -1" in caplog.text


def test_no_sweeper_in_django_q2_sync_mode_or_outside_a_worker_process(monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(sweeper_module, "_started", {})
    with override_settings(DJANGO_WORKFLOWS=DJANGOQ):
        spawn()  # this process has no parent process: not a cluster worker
        monkeypatch.setattr(sweeper_module.multiprocessing, "parent_process", lambda: object())
        monkeypatch.setattr(Conf, "SYNC", True)
        spawn()
    assert sweeper_module._started == {}
