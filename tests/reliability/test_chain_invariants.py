"""What a worker executes after the transition that completed a step: the next machine
step of the same instance, claimed in that transition (``process_run`` chains it). The
state may change between that commit and the execution; the chain must notice."""

import time

import pytest

from django_workflows import WorkflowStatus
from django_workflows.models import StepRun

from .helpers import TIMEOUT, Blocking, Failing, in_background, journal

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def test_cancel_between_a_step_commit_and_the_next_chained_step(local_engine, hook):
    """Deterministic: the cancel commits right after "block" completed (its event is
    delivered after commit, in the worker's thread) and before "after" starts.

    "after" was claimed in the transaction that completed "block", before the cancel, so
    it is a step already started, like any claimed step: the cancel does not interrupt
    it (docs/guarantees.md, "Cancel"), it runs to its end and its result is discarded.
    Nothing else happens to the instance: no event, no new run, nothing in the context."""
    canceled_at = {}

    def on_event(event):
        if event.type == "StepExecuted" and event.step_name == "block":
            canceled = in_background(lambda: local_engine.cancel_workflow(event.instance_id))
            canceled()
            canceled_at["t"] = time.monotonic()

    hook.on_event = on_event
    Blocking.release.set()
    instance = local_engine.start_workflow("race_cancel")

    assert canceled_at, "the cancel never ran"
    instance = local_engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.CANCELED
    assert instance.current_steps == []
    after = StepRun.objects.get(instance=instance, step_name="after")
    assert after.status == "canceled"
    assert "after" not in instance.context  # its result was discarded
    events = list(instance.events.values_list("type", flat=True))
    assert events[-1] == "WorkflowCanceled", events
    late = [e for e in journal.entries if e[1] == str(instance.id) and e[2] > canceled_at["t"]]
    assert [e[0] for e in late] in ([], ["after"]), late  # at most the step already claimed


def test_a_failed_instance_starts_no_new_step_on_a_sibling_branch(queueing_engine):
    """ "start" chains into "a" and sends "left" to the queue. "left" fails the instance
    while "a" runs. "a" was running already, so it completes; but "b" after it must be
    held (QUEUED), like every runnable run of a failed instance, until a retry."""
    engine = queueing_engine
    instance = engine.start_workflow("race_sibling")
    (start,) = engine.take()
    worker = in_background(lambda: engine.process_run(start))
    assert Blocking.entered.wait(TIMEOUT)  # "a" is executing, chained after "start"
    (left,) = engine.take()
    assert engine.process_run(left) == []
    assert engine.get_instance(instance.id).status == WorkflowStatus.FAILED

    Blocking.release.set()
    worker()

    instance = engine.get_instance(instance.id)
    assert (instance.status, instance.failed_step) == (WorkflowStatus.FAILED, "left")
    executed = [step for step, _, _ in journal.entries]
    assert "b" not in executed, f"a new step ran in a failed instance: {executed}"
    assert StepRun.objects.get(instance=instance, step_name="b").status == "queued"

    Failing.switch["on"] = False
    instance = engine.retry(instance.id)
    while engine.queued:
        for run_id in engine.take():
            engine.process_run(run_id)
    assert engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED
    assert [step for step, _, _ in journal.entries].count("b") == 1
