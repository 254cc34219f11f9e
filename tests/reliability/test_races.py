"""Races between threads on PostgreSQL (real row locks), at the engine level.

Each race is repeated; whatever the interleaving, the outcome is one of the allowed
ones and the database is consistent: never half of one outcome and half of another.
"""

import random
import time

import pytest

from django_workflows import StateConflict, TaskNotOpen, WorkflowStatus
from django_workflows.models import HumanTask, StepRun

from .helpers import TIMEOUT, Blocking, check_canceled, in_background, in_threads, journal

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


# -- the same human task completed by ten threads ----------------------------------------------


@pytest.mark.parametrize("round_", range(5))
def test_ten_threads_complete_the_same_task_one_wins(local_engine, round_):
    instance = local_engine.start_workflow("race_task")
    assert instance.status == WorkflowStatus.WAITING

    def complete(n):
        return lambda: local_engine.complete_human_task(instance.id, "approve", None, {"n": n})

    results = in_threads(*(complete(n) for n in range(10)))

    wins = [(n, r) for n, r in enumerate(results) if not isinstance(r, Exception)]
    others = [r for r in results if isinstance(r, Exception) and not isinstance(r, TaskNotOpen)]
    assert not others, others
    assert len(wins) == 1, results
    ((winner, _),) = wins
    instance = local_engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"n": winner, "after": True}
    task = HumanTask.objects.get(instance=instance)
    assert (task.status, task.result) == ("completed", {"n": winner})
    assert instance.events.filter(type="HumanTaskCompleted").count() == 1
    assert StepRun.objects.filter(instance=instance, step_name="after").count() == 1
    assert len(journal.of("after")) == 1


# -- cancel racing a step's completion ----------------------------------------------------------


@pytest.mark.parametrize("round_", range(8))
def test_cancel_races_a_step_completion(local_engine, round_):
    """The step is blocked; cancel and release it at (nearly) the same moment, in either
    order: the instance ends CANCELED, or COMPLETED with the cancel refused."""
    started = in_background(lambda: local_engine.start_workflow("race_cancel"))
    assert Blocking.entered.wait(TIMEOUT)
    (instance_id,) = StepRun.objects.filter(step_name="block").values_list("instance_id", flat=True)
    rng = random.Random(round_)
    cancel_delay, release_delay = rng.choice([(0, 0.02), (0.02, 0), (0, 0)])
    canceled_at = {}

    def cancel():
        time.sleep(cancel_delay)
        try:
            return local_engine.cancel_workflow(instance_id, reason="race")
        finally:
            canceled_at["t"] = time.monotonic()

    def release():
        time.sleep(release_delay)
        Blocking.release.set()

    results = in_threads(cancel, release)
    started()  # the worker's start_workflow returns, whatever happened

    instance = local_engine.get_instance(instance_id)
    if isinstance(results[0], Exception):
        assert isinstance(results[0], StateConflict), results[0]
        assert instance.status == WorkflowStatus.COMPLETED
        statuses = set(StepRun.objects.filter(instance=instance).values_list("status", flat=True))
        assert statuses == {"completed"}
        assert len(journal.of("block")) == len(journal.of("after")) == 1
    else:
        check_canceled(local_engine, instance_id, canceled_at["t"])


@pytest.mark.parametrize("round_", range(5))
def test_cancel_races_a_task_completion(local_engine, round_):
    instance = local_engine.start_workflow("race_task")
    canceled_at = {}

    def cancel():
        try:
            return local_engine.cancel_workflow(instance.id, reason="race")
        finally:
            canceled_at["t"] = time.monotonic()

    results = in_threads(
        cancel, lambda: local_engine.complete_human_task(instance.id, "approve", None, {"ok": 1})
    )

    canceled, completed = results
    if isinstance(canceled, Exception):  # the completion (and "after") went first
        assert isinstance(canceled, StateConflict), canceled
        assert not isinstance(completed, Exception), completed
        assert local_engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED
        assert len(journal.of("after")) == 1
    else:
        if isinstance(completed, Exception):
            assert isinstance(completed, TaskNotOpen), completed
        check_canceled(local_engine, instance.id, canceled_at["t"])
