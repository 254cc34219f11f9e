"""External signals: WaitForSignal and engine.send_signal (buffered, idempotent, FIFO,
discarded when the instance finishes, timeouts)."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError

from django_workflows import (
    DefinitionError,
    Edge,
    ExclusiveGateway,
    InstanceNotFound,
    StateConflict,
    WaitForSignal,
    WorkflowDefinition,
    WorkflowStatus,
)
from django_workflows.models import StepRun, WorkflowSignal
from django_workflows.testing import advance_time

from ..factories import UserFactory
from ..workflows import ManagerApproval, Record, calls

pytestmark = pytest.mark.django_db


def payment(key=None, timeout=None):
    return WorkflowDefinition(
        name="payment",
        version="1",
        initial_step="order",
        steps={
            "order": Record(),
            "paid": WaitForSignal("payment_received", key=key, timeout=timeout),
            "ship": Record(),
        },
        edges=[Edge("order", "paid"), Edge("paid", "ship")],
    )


def approve_then_wait_twice():
    """A human step first (signals sent meanwhile are buffered), then two waits."""
    return WorkflowDefinition(
        name="twice",
        version="1",
        initial_step="manager_approval",
        steps={
            "manager_approval": ManagerApproval(),
            "first": WaitForSignal("tick", key="first"),
            "second": WaitForSignal("tick", key="second"),
            "done": Record(),
        },
        edges=[
            Edge("manager_approval", "first"),
            Edge("first", "second"),
            Edge("second", "done"),
        ],
    )


@pytest.fixture
def sig_engine(engine, wf_registry):
    for definition in (payment(), approve_then_wait_twice()):
        wf_registry.register_definition(definition)
    return engine


def own(instance):
    """The context without the ``<step>_done`` flags ``Record`` sets."""
    return {k: v for k, v in instance.context.items() if not k.endswith("_done")}


def events(instance, type_):
    return [e.payload for e in instance.events.filter(type=type_).order_by("id")]


def test_a_waiting_instance_takes_the_signal_and_goes_on(
    sig_engine, bus, django_capture_on_commit_callbacks
):
    instance = sig_engine.start_workflow("payment", initial_data={"order": 7})
    assert instance.status == WorkflowStatus.WAITING
    assert instance.current_steps == ["paid"]
    assert [step for _, step in calls] == ["order"]

    with django_capture_on_commit_callbacks(execute=True):
        signal, created = sig_engine.send_signal(
            "payment_received", {"amount": 12}, instance_id=instance.pk
        )

    assert created is True
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert own(instance) == {"order": 7, "amount": 12}
    assert [step for _, step in calls] == ["order", "ship"]
    run = StepRun.objects.get(instance=instance, step_name="paid")
    assert (run.status, run.step_type, run.changes) == ("completed", "signal", {"amount": 12})
    assert signal.consumed_at is not None and signal.consumed_by_step_run_id == run.pk
    assert signal.state == "consumed"
    [received] = events(instance, "SignalReceived")
    assert received["consumed"] is True
    assert (received["signal"], received["signal_id"]) == ("payment_received", signal.pk)
    assert "SignalReceived" in [e.type for e in bus.events]


def test_the_data_goes_under_the_steps_key(engine, wf_registry):
    wf_registry.register_definition(payment(key="payment"))
    instance = engine.start_workflow("payment")
    engine.send_signal("payment_received", {"amount": 3}, instance_id=instance.pk)
    instance.refresh_from_db()
    assert own(instance) == {"payment": {"amount": 3}}


def test_a_signal_sent_early_is_buffered_then_consumed_in_order(sig_engine, manager):
    instance = sig_engine.start_workflow("twice")
    one, _ = sig_engine.send_signal("tick", {"n": 1}, instance_id=instance.pk)
    two, _ = sig_engine.send_signal("tick", {"n": 2}, instance_id=instance.pk)
    other, _ = sig_engine.send_signal("unrelated", instance_id=instance.pk)
    assert [e["consumed"] for e in events(instance, "SignalReceived")] == [False] * 3
    assert WorkflowSignal.objects.filter(consumed_at=None).count() == 3

    sig_engine.complete_human_task(instance.pk, "manager_approval", manager.pk, {"approved": True})

    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["first"] == {"n": 1} and instance.context["second"] == {"n": 2}
    one.refresh_from_db(), two.refresh_from_db(), other.refresh_from_db()
    runs = {r.step_name: r.pk for r in StepRun.objects.filter(instance=instance)}
    assert one.consumed_by_step_run_id == runs["first"]
    assert two.consumed_by_step_run_id == runs["second"]
    # Nobody waited for "unrelated": discarded when the instance completed, with an event.
    assert other.state == "discarded"
    assert events(instance, "SignalDiscarded") == [
        {"signal": "unrelated", "signal_id": other.pk, "user_id": None, "reason": ""}
    ]


def test_the_same_idempotency_key_again_is_a_no_op(sig_engine):
    instance = sig_engine.start_workflow("payment")
    first, created = sig_engine.send_signal(
        "payment_received", {"amount": 1}, instance_id=instance.pk, idempotency_key="k1"
    )
    again, created_again = sig_engine.send_signal(
        "payment_received", {"amount": 2}, instance_id=instance.pk, idempotency_key="k1"
    )
    assert (created, created_again) == (True, False)
    assert again.pk == first.pk and again.data == {"amount": 1}
    assert WorkflowSignal.objects.count() == 1
    instance.refresh_from_db()
    assert own(instance) == {"amount": 1}
    assert len(events(instance, "SignalReceived")) == 1


def test_a_business_key_names_one_active_instance(sig_engine):
    instance = sig_engine.start_workflow("payment", business_key="order-1")
    sig_engine.send_signal("payment_received", {"ok": True}, business_key="order-1")
    instance.refresh_from_db()
    assert own(instance) == {"ok": True}
    with pytest.raises(InstanceNotFound, match="order-1"):  # completed: no longer active
        sig_engine.send_signal("payment_received", business_key="order-1")
    sig_engine.start_workflow("payment", business_key="dup")
    sig_engine.start_workflow("payment", business_key="dup")
    with pytest.raises(StateConflict, match="several"):
        sig_engine.send_signal("payment_received", business_key="dup")


def test_a_replay_by_business_key_after_the_instance_finished_is_a_no_op(sig_engine):
    # The webhook case: the provider redelivers its event after the order completed.
    instance = sig_engine.start_workflow("payment", business_key="order-7")
    first, _ = sig_engine.send_signal(
        "payment_received", {"ok": True}, business_key="order-7", idempotency_key="evt-1"
    )
    instance.refresh_from_db()
    assert instance.status == "completed"
    again, created = sig_engine.send_signal(
        "payment_received", {"ok": False}, business_key="order-7", idempotency_key="evt-1"
    )
    assert (again.pk, created) == (first.pk, False)
    assert WorkflowSignal.objects.count() == 1
    with pytest.raises(InstanceNotFound):  # a new key: no active instance to take it
        sig_engine.send_signal("payment_received", business_key="order-7", idempotency_key="e2")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "", "instance_id": "x"}, "name"),
        ({"name": "a" * 201, "instance_id": "x"}, "name"),
        ({"name": "s", "data": [1], "instance_id": "x"}, "data"),
        ({"name": "s"}, "instance_id"),
        ({"name": "s", "instance_id": "x", "business_key": "b"}, "instance_id"),
        ({"name": "s", "instance_id": "x", "idempotency_key": ""}, "idempotency_key"),
        # data a wait could never merge: refused on sending, not failing the instance later
        ({"name": "s", "data": {"a": "x\x00y"}, "instance_id": "x"}, "data"),
        ({"name": "s", "data": {"a": float("nan")}, "instance_id": "x"}, "data"),
        ({"name": "s", "data": {1: "one"}, "instance_id": "x"}, "data"),
        ({"name": "s", "data": {"a": "x" * (1024 * 1024)}, "instance_id": "x"}, "data"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(sig_engine, kwargs, field):
    with pytest.raises(ValidationError) as info:
        sig_engine.send_signal(**kwargs)
    assert field in info.value.message_dict
    assert WorkflowSignal.objects.count() == 0


def test_unknown_and_finished_instances(sig_engine):
    with pytest.raises(InstanceNotFound):
        sig_engine.send_signal("s", instance_id="not-a-uuid")
    instance = sig_engine.start_workflow("payment")
    sig_engine.send_signal("payment_received", instance_id=instance.pk, idempotency_key="k")
    with pytest.raises(StateConflict, match="completed"):
        sig_engine.send_signal("payment_received", instance_id=instance.pk)
    # A replay of a key the instance took is still a no-op, after it finished.
    signal, created = sig_engine.send_signal(
        "payment_received", instance_id=instance.pk, idempotency_key="k"
    )
    assert created is False and signal.state == "consumed"


def test_canceling_discards_the_pending_signals(sig_engine):
    instance = sig_engine.start_workflow("payment")
    signal, _ = sig_engine.send_signal("elsewhere", {"x": 1}, instance_id=instance.pk)
    assert signal.state == "pending"
    sig_engine.cancel_workflow(instance.pk)
    signal.refresh_from_db()
    assert signal.state == "discarded"
    assert [e["signal_id"] for e in events(instance, "SignalDiscarded")] == [signal.pk]


def test_without_a_signal_the_timeout_fails_the_step_and_a_retry_waits_again(engine, wf_registry):
    wf_registry.register_definition(payment(timeout=timedelta(hours=2)))
    instance = engine.start_workflow("payment")
    advance_time(timedelta(hours=1), engine)
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.WAITING

    advance_time(timedelta(hours=1, seconds=1), engine)

    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "paid"
    assert "payment_received" in instance.error
    with pytest.raises(StateConflict, match="retry it first"):
        engine.send_signal("payment_received", instance_id=instance.pk)
    engine.retry(instance.pk)
    engine.send_signal("payment_received", {"late": True}, instance_id=instance.pk)
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert own(instance) == {"late": True}


def test_a_signal_that_came_in_time_is_not_timed_out(engine, wf_registry):
    wf_registry.register_definition(payment(timeout=timedelta(hours=2)))
    instance = engine.start_workflow("payment")
    engine.send_signal("payment_received", instance_id=instance.pk)
    advance_time(timedelta(hours=3), engine)
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED


def test_a_routing_failure_leaves_the_signal_for_the_retry(engine, wf_registry):
    wf_registry.register_definition(
        WorkflowDefinition(
            name="choose",
            version="1",
            initial_step="wait",
            steps={"wait": WaitForSignal("go"), "route": ExclusiveGateway(), "a": Record()},
            edges=[
                Edge("wait", "route"),
                Edge("route", "a", condition="context.get('ok') == True"),
            ],
        )
    )
    instance = engine.start_workflow("choose")
    signal, _ = engine.send_signal("go", {"ok": False}, instance_id=instance.pk)
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.FAILED
    assert "ok" not in instance.context  # the context as before the step
    signal.refresh_from_db()
    assert signal.state == "pending"


def test_the_async_twin(sig_engine):
    instance = sig_engine.start_workflow("payment")
    signal, created = async_to_sync(sig_engine.asend_signal)(
        "payment_received", {"a": 1}, instance_id=instance.pk
    )
    assert created and signal.state == "consumed"


def test_one_signal_ends_one_wait_of_several_for_its_name(engine, wf_registry):
    wf_registry.register_definition(
        WorkflowDefinition(
            name="two_waits",
            version="1",
            initial_step="first",
            steps={
                "first": WaitForSignal("tick", key="first"),
                "second": WaitForSignal("tick", key="second"),
            },
            edges=[Edge("first", "second")],
        )
    )
    instance = engine.start_workflow("two_waits")
    engine.send_signal("tick", {"n": 1}, instance_id=instance.pk)
    instance.refresh_from_db()
    assert (instance.status, instance.current_steps) == (WorkflowStatus.WAITING, ["second"])
    engine.send_signal("tick", {"n": 2}, instance_id=instance.pk)
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"first": {"n": 1}, "second": {"n": 2}}


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("",), {}, "signal name"),
        (("s" * 201,), {}, "signal name"),
        (("s",), {"key": ""}, "key"),
        (("s",), {"timeout": timedelta(0)}, "timeout"),
        (("s",), {"timeout": 5}, "timeout"),
    ],
)
def test_a_bad_wait_is_refused_where_it_is_written(args, kwargs, message):
    with pytest.raises(DefinitionError, match=message):
        WaitForSignal(*args, **kwargs)


def test_a_timeout_edge_routes_a_wait_that_no_signal_ends(engine, wf_registry):
    """With a timeout edge the wait goes on down the edge (here to a second wait, which
    the late signal ends)."""
    wf_registry.register_definition(
        WorkflowDefinition(
            name="payment_or_reminder",
            version="1",
            initial_step="paid",
            steps={
                "paid": WaitForSignal("payment_received"),
                "ship": Record(),
                "chase": WaitForSignal("payment_received", key="late"),
            },
            edges=[
                Edge("paid", "ship"),
                Edge("paid", "chase", on="timeout", after=timedelta(days=3)),
            ],
        )
    )
    instance = engine.start_workflow("payment_or_reminder")
    advance_time(timedelta(days=3, seconds=1), engine)
    instance.refresh_from_db()
    assert instance.current_steps == ["chase"]
    assert StepRun.objects.get(instance=instance, step_name="paid").status == "canceled"
    assert instance.events.filter(type="StepTimedOut").count() == 1

    engine.send_signal("payment_received", {"amount": 5}, instance_id=instance.pk)
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["late"] == {"amount": 5}


def test_a_wait_with_its_own_timeout_and_a_timeout_edge_is_refused():
    # Both would fire at their time: one fails the step, the other routes on.
    day = timedelta(days=1)
    with pytest.raises(DefinitionError, match="give one of them"):
        WorkflowDefinition(
            name="both",
            version="1",
            initial_step="paid",
            steps={"paid": WaitForSignal("paid", timeout=day), "chase": Record()},
            edges=[Edge("paid", "chase", on="timeout", after=day)],
        ).validate()


def test_a_pending_signal_discarded_by_hand_is_never_consumed(sig_engine, manager):
    from django.core.exceptions import PermissionDenied

    from django_workflows import SignalNotFound

    instance = sig_engine.start_workflow("twice", started_by=manager)
    signal, _ = sig_engine.send_signal("tick", {"n": 1}, instance_id=instance.pk)
    stranger = UserFactory()
    with pytest.raises(PermissionDenied):
        sig_engine.discard_signal(signal.pk, by=stranger)
    discarded = sig_engine.discard_signal(signal.pk, by=manager, reason="sent twice")
    assert discarded.state == "discarded"
    with pytest.raises(StateConflict, match="only a pending one"):
        sig_engine.discard_signal(signal.pk, by=manager)
    with pytest.raises(SignalNotFound):
        sig_engine.discard_signal(10**9, by=manager)
    event = instance.events.get(type="SignalDiscarded")
    assert (event.payload["user_id"], event.payload["reason"]) == (manager.pk, "sent twice")

    second, _ = sig_engine.send_signal("tick", {"n": 2}, instance_id=instance.pk)
    async_to_sync(sig_engine.adiscard_signal)(second.pk, by=manager)  # the async twin
    second.refresh_from_db()
    assert second.state == "discarded"

    sig_engine.complete_human_task(instance.pk, "manager_approval", manager.pk, {"approved": True})
    instance.refresh_from_db()
    assert instance.current_steps == ["first"]  # neither discarded signal was taken
