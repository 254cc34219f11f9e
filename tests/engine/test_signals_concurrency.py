"""Signals racing on PostgreSQL: senders serialize on the instance row lock."""

import threading

import pytest
from django.db import connections

from django_workflows import (
    BaseMachineStep,
    Edge,
    LocalExecutionEngine,
    WaitForSignal,
    WorkflowDefinition,
    WorkflowStatus,
)
from django_workflows.models import StepRun, WorkflowSignal

from ..helpers import TIMEOUT, QueueingEngine, in_threads
from ..workflows import Record
from .test_signals import approve_then_wait_twice, payment

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sig_engine(engine, wf_registry):
    for definition in (payment(), approve_then_wait_twice()):
        wf_registry.register_definition(definition)
    return engine


@pytest.mark.parametrize("round_", range(3))
def test_two_senders_of_one_key_store_one_signal(sig_engine, round_):
    instance = sig_engine.start_workflow("payment")

    def send(amount):
        return lambda: sig_engine.send_signal(
            "payment_received", {"amount": amount}, instance_id=instance.pk, idempotency_key="k"
        )

    results = in_threads(send(1), send(2))

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(created for _, created in results) == [False, True]
    assert len({signal.pk for signal, _ in results}) == 1
    assert WorkflowSignal.objects.filter(instance=instance).count() == 1
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.events.filter(type="SignalReceived").count() == 1


def two_waits():
    return WorkflowDefinition(
        name="two_waits",
        version="1",
        initial_step="first",
        steps={
            "first": WaitForSignal("tick", key="first"),
            "second": WaitForSignal("tick", key="second"),
            "done": Record(),
        },
        edges=[Edge("first", "second"), Edge("second", "done")],
    )


@pytest.mark.parametrize("round_", range(3))
def test_two_signals_racing_one_wait_are_consumed_one_per_wait(engine, wf_registry, round_):
    wf_registry.register_definition(two_waits())
    instance = engine.start_workflow("two_waits")

    def send(n):
        return lambda: engine.send_signal("tick", {"n": n}, instance_id=instance.pk)

    results = in_threads(send(1), send(2))

    assert not [r for r in results if isinstance(r, Exception)], results
    first, second = WorkflowSignal.objects.filter(instance=instance).order_by("id")
    runs = {r.step_name: r.pk for r in StepRun.objects.filter(instance=instance)}
    # The first to lock the instance was consumed by the first wait, the other by the next.
    assert first.consumed_by_step_run_id == runs["first"]
    assert second.consumed_by_step_run_id == runs["second"]
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert (instance.context["first"], instance.context["second"]) == (first.data, second.data)
    assert {first.data["n"], second.data["n"]} == {1, 2}


@pytest.mark.parametrize("round_", range(3))
def test_a_signal_racing_the_instance_to_the_wait_is_consumed_once(wf_registry, round_):
    wf_registry.register_definition(payment())
    engine = QueueingEngine(wf_registry)
    instance = engine.start_workflow("payment")
    (order_run,) = engine.take()

    results = in_threads(
        lambda: engine.process_run(order_run),
        lambda: engine.send_signal("payment_received", {"paid": 1}, instance_id=instance.pk),
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    for run_id in engine.take():  # "ship", queued by whichever of the two went second
        engine.process_run(run_id)
    signal = WorkflowSignal.objects.get(instance=instance)
    wait = StepRun.objects.get(instance=instance, step_name="paid")
    assert signal.consumed_by_step_run_id == wait.pk
    instance.refresh_from_db()
    assert instance.context["paid"] == 1
    assert StepRun.objects.filter(instance=instance, step_name="ship").count() == 1


def test_a_signal_buffered_while_the_last_step_runs_is_discarded_at_the_end(wf_registry):
    """The last step finishes on the fast path (unlocked on PostgreSQL): a signal
    buffered meanwhile is discarded when the instance completes."""
    engine = LocalExecutionEngine(wf_registry)

    class SendMeanwhile(BaseMachineStep):
        def execute(self, context):
            thread = threading.Thread(target=send, args=(context.instance_id,))
            thread.start()
            thread.join(TIMEOUT)

    def send(instance_id):
        try:
            engine.send_signal("never_waited_for", {"x": 1}, instance_id=instance_id)
        finally:
            connections.close_all()

    wf_registry.register_definition(
        WorkflowDefinition(
            name="one_step", version="1", initial_step="work", steps={"work": SendMeanwhile()}
        )
    )
    instance = engine.start_workflow("one_step")

    assert instance.status == WorkflowStatus.COMPLETED
    signal = WorkflowSignal.objects.get(instance=instance)
    assert signal.state == "discarded"
    assert instance.events.filter(type="SignalDiscarded").count() == 1
