"""``manage.py setup_demo``: what the README promises the demo shows."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command

from django_workflows.engine import get_engine
from django_workflows.models import HumanTask, Substitution, WorkflowInstance
from django_workflows.permissions import completable_tasks
from django_workflows.testing import advance_time

pytestmark = pytest.mark.django_db


def users():
    User = get_user_model()
    return (User.objects.get(username=name) for name in ("demo", "ann", "bob"))


def test_the_purchase_is_two_of_three_with_a_deadline_and_a_substitute(capsys):
    call_command("setup_demo")
    demo, ann, bob = users()
    assert not ann.is_staff and not bob.is_staff
    assert Substitution.objects.get(user=ann).substitute == demo
    purchase = WorkflowInstance.objects.get(definition__name="purchase_approval")
    tasks = {t.assignee.username: t for t in HumanTask.objects.filter(instance=purchase)}
    assert set(tasks) == {"ann", "bob", "demo"}
    assert all(t.due_at and t.remind_at and t.escalate_at for t in tasks.values())
    assert [t.pk for t in completable_tasks(bob)] == [tasks["bob"].pk]

    engine = get_engine()
    engine.complete_task(tasks["ann"].pk, demo, action="Approve", check_permission=True)
    done = HumanTask.objects.get(pk=tasks["ann"].pk)
    assert (done.completed_by, done.completed_on_behalf_of) == (demo, ann)
    assert engine.get_instance(purchase.pk).status == "waiting"  # one of two
    engine.complete_task(tasks["bob"].pk, bob, action="Approve", check_permission=True)
    purchase = engine.get_instance(purchase.pk)
    assert purchase.status == "completed" and purchase.context["ordered"] is True
    assert HumanTask.objects.get(pk=tasks["demo"].pk).close_reason == "completion reached"

    call_command("setup_demo")  # again: nothing doubles
    assert "demo instances exist already" in capsys.readouterr().out
    assert Substitution.objects.count() == 1


def test_an_unanswered_purchase_goes_to_the_managers_after_three_days():
    call_command("setup_demo")
    purchase = WorkflowInstance.objects.get(definition__name="purchase_approval")
    advance_time(timedelta(days=1, minutes=1))  # a reminder each
    assert purchase.events.filter(type="HumanTaskReminder").count() == 3
    advance_time(timedelta(days=2))
    tasks = HumanTask.objects.filter(instance=purchase, status="open")
    assert tasks.count() == 3
    for task in tasks:
        assert task.assignee_id is None
        assert [g.name for g in task.candidate_groups.all()] == ["managers"]
    assert purchase.events.filter(type="HumanTaskEscalated").count() == 3


def test_a_board_rejection_needs_a_comment_and_decides_at_once():
    call_command("setup_demo")
    _demo, _ann, bob = users()
    purchase = WorkflowInstance.objects.get(definition__name="purchase_approval")
    task = HumanTask.objects.get(instance=purchase, assignee=bob)
    engine = get_engine()
    with pytest.raises(ValidationError, match="comment is required"):
        engine.complete_task(task.pk, bob, action="Reject", check_permission=True)
    engine.complete_task(
        task.pk, bob, action="Reject", check_permission=True, comment="Too expensive."
    )
    purchase = engine.get_instance(purchase.pk)
    assert purchase.status == "completed" and purchase.context["ordered"] is False
    assert purchase.comments.get().text == "Too expensive."


def test_the_order_reserves_each_line_in_a_child_then_waits_for_the_payment():
    call_command("setup_demo")
    order = WorkflowInstance.objects.get(definition__name="order_processing")
    assert order.status == "waiting" and order.current_steps == ["payment"]
    assert order.business_key == "ORDER-1001"
    children = list(order.children.order_by("parent_item"))
    assert [c.status for c in children] == ["completed"] * 3
    assert order.context["amount_due"] == 2 * 180 + 4 * 95 + 3 * 25

    engine = get_engine()
    engine.send_signal("payment_received", {"amount": 815}, business_key="ORDER-1001")
    order = engine.get_instance(order.pk)
    assert order.status == "completed" and order.context["order_status"] == "shipped"
    assert order.context["payment"] == {"amount": 815}


def test_an_unpaid_order_is_released_after_two_days():
    call_command("setup_demo")
    order = WorkflowInstance.objects.get(definition__name="order_processing")
    advance_time(timedelta(days=2, minutes=1))
    order = get_engine().get_instance(order.pk)
    assert order.status == "completed"
    assert order.context["order_status"] == "released: not paid in time"
    assert order.events.filter(type="StepTimedOut").count() == 1
