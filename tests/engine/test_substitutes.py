"""Out-of-office substitutes: the task rule lends the absent user's tasks, not powers."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from django_workflows import BaseHumanStep, WorkflowDefinition
from django_workflows.exceptions import StateConflict
from django_workflows.models import HumanTask, Substitution, WorkflowEvent
from django_workflows.permissions import (
    can_complete_task,
    can_view_task,
    completable_tasks,
    on_behalf_of,
    visible_instances,
    visible_tasks,
)
from django_workflows.substitutes import (
    active_substitutions_for,
    add_substitute,
    end_substitution,
)

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


class Assigned(BaseHumanStep):
    title = "Approve"
    fields = ("ok",)

    def get_assignee(self, context):
        return context.get("approver")


@pytest.fixture
def absent(db):
    return UserFactory(username="absent")


@pytest.fixture
def deputy(db):
    return UserFactory(username="deputy")


@pytest.fixture
def task(engine, absent):
    engine.registry.register_definition(
        WorkflowDefinition(name="leave", version="1", initial_step="a", steps={"a": Assigned()})
    )
    instance = engine.start_workflow("leave", initial_data={"approver": absent.pk})
    return instance.human_tasks.get()


def away(absent, deputy, start=-1, end=1, **kwargs):
    """``deputy`` stands in for ``absent`` from ``start`` to ``end`` days from now."""
    now = timezone.now()
    return add_substitute(
        absent, deputy, now + timedelta(days=start), now + timedelta(days=end), **kwargs
    )


def test_the_substitute_completes_the_absent_users_task_on_their_behalf(
    engine, bus, task, absent, deputy, django_capture_on_commit_callbacks
):
    assert not can_complete_task(task, deputy)
    assert not visible_tasks(deputy).exists()
    away(absent, deputy, reason="holidays")

    assert can_complete_task(task, deputy) and can_view_task(deputy, task)
    assert list(completable_tasks(deputy)) == [task]
    assert list(visible_tasks(deputy)) == [task]
    assert list(visible_instances(deputy)) == [task.instance]
    assert on_behalf_of(task, deputy) == absent.pk
    assert on_behalf_of(task, absent) is None  # the absent user may still do it themselves

    with django_capture_on_commit_callbacks(execute=True):
        engine.complete_task(task.pk, deputy, {"ok": True}, check_permission=True)
    done = HumanTask.objects.get(pk=task.pk)
    assert (done.completed_by, done.completed_on_behalf_of) == (deputy, absent)
    event = WorkflowEvent.objects.get(type="HumanTaskCompleted")
    assert event.payload["user_id"] == deputy.pk
    assert event.payload["on_behalf_of_user_id"] == absent.pk
    sent = [e for e in bus.events if e.type == "HumanTaskCompleted"]
    assert sent[0].on_behalf_of_user_id == absent.pk


def test_the_absent_user_completing_it_is_not_on_anyones_behalf(engine, task, absent, deputy):
    away(absent, deputy)
    engine.complete_task(task.pk, absent, {"ok": True}, check_permission=True)
    event = WorkflowEvent.objects.get(type="HumanTaskCompleted")
    assert event.payload["on_behalf_of_user_id"] is None
    assert HumanTask.objects.get(pk=task.pk).completed_on_behalf_of is None


@pytest.mark.parametrize(("start", "end"), [(1, 2), (-2, -1)])
def test_before_and_after_the_period_the_substitute_may_not(
    engine, task, absent, deputy, start, end
):
    away(absent, deputy, start, end)
    assert not can_complete_task(task, deputy)
    assert not completable_tasks(deputy).exists() and not visible_tasks(deputy).exists()
    with pytest.raises(PermissionDenied):
        engine.complete_task(task.pk, deputy, {"ok": True}, check_permission=True)
    with pytest.raises(PermissionDenied):
        engine.claim_task(task.pk, deputy)
    assert HumanTask.objects.get(pk=task.pk).status == "open"


def test_an_inactive_absent_user_lends_nothing(task, absent, deputy):
    away(absent, deputy)
    absent.is_active = False
    absent.save()
    assert not can_complete_task(task, deputy)
    assert not completable_tasks(deputy).exists()


def test_a_substitute_inherits_tasks_not_permissions(engine, absent, deputy, task):
    absent.user_permissions.add(Permission.objects.get(codename="complete_any_task"))
    other = engine.start_workflow("leave", initial_data={"approver": UserFactory().pk})
    other_task = other.human_tasks.get()
    away(absent, deputy)
    absent = type(absent).objects.get(pk=absent.pk)  # a fresh permission cache
    assert can_complete_task(other_task, absent)
    assert not can_complete_task(other_task, deputy)
    assert list(completable_tasks(deputy)) == [task]
    with pytest.raises(PermissionDenied):
        engine.complete_task(other_task.pk, deputy, {"ok": True}, check_permission=True)


def test_a_group_task_of_the_absent_user(engine, managers, manager, deputy):
    instance = engine.start_workflow("expense", initial_data={"amount": 5})
    task = instance.human_tasks.get()
    assert not can_complete_task(task, deputy)
    away(manager, deputy)
    assert can_complete_task(task, deputy)
    assert list(completable_tasks(deputy)) == [task]
    # Claimed by the substitute, it is still done for the absent user.
    engine.claim_task(task.pk, deputy)
    engine.complete_task(task.pk, deputy, {"approved": False}, check_permission=True)
    done = HumanTask.objects.get(pk=task.pk)
    assert (done.completed_by, done.completed_on_behalf_of) == (deputy, manager)


def test_a_task_the_absent_user_claimed(engine, managers, manager, deputy):
    instance = engine.start_workflow("expense", initial_data={"amount": 5})
    task = engine.claim_task(instance.human_tasks.get().pk, manager)
    away(manager, deputy)
    assert can_complete_task(task, deputy)
    assert on_behalf_of(task, deputy) == manager.pk


def test_substitutions_do_not_chain(task, absent, deputy):
    third = UserFactory()
    away(absent, deputy)
    away(deputy, third)
    assert not can_complete_task(task, third)
    assert not completable_tasks(third).exists()


def test_add_substitute_refuses_bad_input(absent, deputy):
    now = timezone.now()
    with pytest.raises(ValidationError) as caught:
        add_substitute(absent, absent, now, now + timedelta(days=1))
    assert "substitute" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        add_substitute(absent, deputy, now, now)
    assert "ends_at" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        add_substitute(absent, 424242, now, now + timedelta(days=1))
    assert "substitute" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        add_substitute(absent, deputy, now.replace(tzinfo=None), now + timedelta(days=1))
    assert "starts_at" in caught.value.message_dict
    with pytest.raises(ValidationError):
        add_substitute(absent, deputy, now, now + timedelta(days=1), reason="x" * 301)
    assert not Substitution.objects.exists()


def test_ending_a_substitution(task, absent, deputy):
    current = away(absent, deputy)
    future = away(absent, deputy, 3, 4)
    assert list(active_substitutions_for(absent)) == [current]
    ended = end_substitution(current)
    assert ended.ends_at <= timezone.now()
    assert not can_complete_task(task, deputy)
    assert end_substitution(current.pk).ends_at == ended.ends_at  # over: as it is
    with pytest.raises(StateConflict):
        end_substitution(future)  # never began: delete it instead
    assert Substitution.objects.get(pk=future.pk).ends_at == future.ends_at


@pytest.mark.parametrize("who", ["absent", "deputy", "stranger", "anyone", "claimer"])
def test_completion_answers_both_questions_as_the_two_rules_do(task, absent, deputy, who):
    """``completion`` (one look-up for a completion) agrees with ``can_complete_task``
    and ``on_behalf_of`` asked apart."""
    from django_workflows.permissions import completion

    away(absent, deputy)
    user = {"absent": absent, "deputy": deputy}.get(who) or UserFactory(username=who)
    if who == "anyone":
        user.user_permissions.add(Permission.objects.get(codename="complete_any_task"))
        user = type(user).objects.get(pk=user.pk)
    if who == "claimer":
        HumanTask.objects.filter(pk=task.pk).update(claimed_by=user)
        task.refresh_from_db()
    assert completion(task, user) == (can_complete_task(task, user), on_behalf_of(task, user))
