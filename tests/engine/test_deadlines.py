"""Deadlines that act: reminders and escalation of open human tasks, fired by the sweep."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_workflows import BaseHumanStep, DefinitionError, WorkflowDefinition
from django_workflows.models import HumanTask, WorkflowEvent
from django_workflows.permissions import can_complete_task
from django_workflows.testing import advance_time

from ..factories import GroupFactory, UserFactory

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


class Approve(BaseHumanStep):
    title = "Approve"
    fields = ("ok",)
    candidate_groups = ("managers",)
    due_in = timedelta(hours=24)
    remind_every = timedelta(hours=8)
    escalate_after = timedelta(hours=48)
    escalate_to = ("directors",)

    def get_assignee(self, context):
        return context.get("approver")


@pytest.fixture
def deadlines(engine):
    engine.registry.register_definition(
        WorkflowDefinition(name="deadlines", version="1", initial_step="a", steps={"a": Approve()})
    )
    return engine


def start(engine, **data):
    return engine.start_workflow("deadlines", initial_data=data).human_tasks.get()


def events(type_):
    return list(WorkflowEvent.objects.filter(type=type_).order_by("id"))


def test_opening_a_task_arms_its_deadlines(deadlines):
    task = start(deadlines)
    assert task.remind_at - task.created_at == pytest.approx(timedelta(hours=8), abs=HOUR)
    assert task.escalate_at - task.created_at == pytest.approx(timedelta(hours=48), abs=HOUR)
    assert (task.reminders_sent, task.escalated_at) == (0, None)


def test_a_reminder_per_interval_while_the_task_is_open(
    deadlines, bus, django_capture_on_commit_callbacks
):
    task = start(deadlines)
    assert advance_time(timedelta(hours=7), deadlines) == 0
    assert events("HumanTaskReminder") == []

    with django_capture_on_commit_callbacks(execute=True):
        assert advance_time(timedelta(hours=1, minutes=1), deadlines) == 1
        assert advance_time(timedelta(hours=8), deadlines) == 1

    reminders = events("HumanTaskReminder")
    assert [e.payload["reminder"] for e in reminders] == [1, 2]
    assert reminders[0].payload["task_id"] == task.pk
    assert reminders[0].step_name == "a"
    task.refresh_from_db()
    assert reminders[1].payload["due_at"] == task.due_at.isoformat()
    assert task.reminders_sent == 2
    # The bus gets them too, after commit.
    assert [e.reminder for e in bus.events if e.type == "HumanTaskReminder"] == [1, 2]


def test_missed_reminders_are_not_sent_in_a_burst(deadlines):
    start(deadlines)
    advance_time(timedelta(hours=30), deadlines)  # three intervals passed while nothing swept
    assert [e.payload["reminder"] for e in events("HumanTaskReminder")] == [1]
    task = HumanTask.objects.get()
    # The next one is the next boundary to come (hour 32), not one per missed interval.
    assert task.remind_at - task.created_at == pytest.approx(timedelta(hours=2), abs=HOUR)
    assert advance_time(timedelta(minutes=1), deadlines) == 0


def test_completing_the_task_disarms_everything(deadlines, manager):
    task = start(deadlines)
    deadlines.complete_task(task.pk, manager.pk, {"ok": True})
    assert advance_time(timedelta(days=10), deadlines) == 0
    assert events("HumanTaskReminder") == events("HumanTaskEscalated") == []


def test_canceling_the_instance_disarms_everything(deadlines):
    task = start(deadlines)
    deadlines.cancel_workflow(task.instance_id)
    assert advance_time(timedelta(days=10), deadlines) == 0
    assert events("HumanTaskReminder") == events("HumanTaskEscalated") == []


def test_escalation_moves_the_task_to_the_escalation_groups_once(deadlines, manager):
    director = UserFactory(groups=[GroupFactory(name="directors")])
    approver = UserFactory()
    task = start(deadlines, approver=approver.pk)
    deadlines.claim_task(task.pk, approver)

    advance_time(timedelta(hours=49), deadlines)

    task.refresh_from_db()
    assert (task.assignee, task.claimed_by) == (None, None)
    assert [g.name for g in task.candidate_groups.all()] == ["directors"]
    assert task.escalated_at is not None and task.escalate_at is None
    assert can_complete_task(task, director)
    assert not can_complete_task(task, approver) and not can_complete_task(task, manager)
    (escalated,) = events("HumanTaskEscalated")
    assert escalated.payload == {
        "task_id": task.pk,
        "due_at": task.due_at.isoformat(),
        "from_user_id": approver.pk,
        "from_groups": ["managers"],
        "to_groups": ["directors"],
    }
    # The escalation replaced the reminder due with it; reminders go on afterwards.
    assert events("HumanTaskReminder") == []
    advance_time(timedelta(days=5), deadlines)
    assert len(events("HumanTaskEscalated")) == 1
    assert [e.payload["reminder"] for e in events("HumanTaskReminder")] == [1]
    deadlines.complete_task(task.pk, director.pk, {"ok": True}, check_permission=True)


def heads(context):
    return [f"{context.get('dept')}-heads"]


class ByAttribute(Approve):
    escalate_to = heads  # a plain function as a class attribute: not a method


class ByMethod(Approve):
    escalate_to = None

    def get_escalate_to(self, context):
        return ["sales-heads"] if context.get("dept") == "sales" else ["heads"]


@pytest.mark.parametrize(
    "step", [ByAttribute(), Approve(escalate_to=heads), ByMethod()], ids=["attr", "arg", "method"]
)
def test_escalate_to_may_depend_on_the_context(engine, step):
    engine.registry.register_definition(
        WorkflowDefinition(name="dyn", version="1", initial_step="a", steps={"a": step})
    )
    instance = engine.start_workflow("dyn", initial_data={"dept": "sales"})
    advance_time(timedelta(hours=49), engine)
    task = instance.human_tasks.get()
    assert [g.name for g in task.candidate_groups.all()] == ["sales-heads"]


def test_an_escalate_to_that_fails_leaves_the_task_where_it_is(engine, caplog):
    class Broken(Approve):
        def get_escalate_to(self, context):
            return []

    engine.registry.register_definition(
        WorkflowDefinition(name="broken", version="1", initial_step="a", steps={"a": Broken()})
    )
    instance = engine.start_workflow("broken")
    advance_time(timedelta(hours=49), engine)
    task = instance.human_tasks.get()
    assert [g.name for g in task.candidate_groups.all()] == ["managers"]
    assert (task.escalate_at, task.escalated_at) == (None, None)  # not tried again
    assert events("HumanTaskEscalated") == []
    assert "was not escalated" in caplog.text


def test_reassigning_keeps_the_reminders_and_the_escalation(deadlines):
    first, second = UserFactory(), UserFactory()
    task = start(deadlines, approver=first.pk)
    armed = (task.remind_at, task.escalate_at)
    moved = deadlines.reassign_task(task.pk, second, by=first)
    assert (moved.remind_at, moved.escalate_at) == armed
    advance_time(timedelta(hours=9), deadlines)
    assert len(events("HumanTaskReminder")) == 1


def test_a_failed_instance_waits_for_its_retry(deadlines):
    task = start(deadlines)
    task.instance.__class__.objects.filter(pk=task.instance_id).update(status="failed")
    assert advance_time(timedelta(hours=9), deadlines) == 0
    assert events("HumanTaskReminder") == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"remind_every": timedelta(0)}, "remind_every must be a positive timedelta"),
        ({"remind_every": timedelta(hours=-1)}, "remind_every must be a positive timedelta"),
        ({"remind_every": 3600}, "remind_every must be a positive timedelta"),
        ({"due_in": timedelta(days=-1)}, "due_in must be a positive timedelta"),
        ({"escalate_after": timedelta(days=1)}, r"escalate_after and escalate_to .* go together"),
        ({"escalate_to": ["x"]}, r"escalate_after and escalate_to .* go together"),
        ({"escalate_after": timedelta(days=1), "escalate_to": []}, "non-empty list"),
        ({"escalate_after": timedelta(days=1), "escalate_to": "boss"}, "non-empty list"),
    ],
)
def test_nonsense_deadlines_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        BaseHumanStep(**options)


def test_nonsense_class_attributes_are_refused(engine):
    class Bad(BaseHumanStep):
        escalate_after = timedelta(hours=-2)
        escalate_to = ("x",)

    with pytest.raises(ValueError, match="escalate_after must be a positive timedelta"):
        Bad()
    step = BaseHumanStep()
    step.escalate_to = ["x"]  # set after construction: registration checks again
    with pytest.raises(
        DefinitionError, match=r"human step 'a': escalate_after and escalate_to .* go together"
    ):
        engine.registry.register_definition(
            WorkflowDefinition(name="bad", version="1", initial_step="a", steps={"a": step})
        )


def test_the_sweep_reads_a_constant_number_of_queries_per_task(deadlines):
    """Open tasks that are not due cost nothing; each due task costs the same."""
    for _ in range(3):
        start(deadlines)

    def sweep_queries(delta):
        with CaptureQueriesContext(connection) as queries:
            advance_time(delta, deadlines)
        return len(queries)

    idle = sweep_queries(timedelta(minutes=1))
    one_each = sweep_queries(timedelta(hours=8))  # 3 reminders
    for _ in range(6):
        start(deadlines)
    assert sweep_queries(timedelta(minutes=1)) == idle  # 9 open tasks, none due
    nine = sweep_queries(timedelta(hours=8))  # 9 reminders
    per_task = (nine - one_each) / 6
    # Lock the instance, lock and read the task, update it, the instance, the event
    # (and, in this test's transaction, a savepoint and its release).
    assert per_task == int(per_task) and per_task <= 7
    assert one_each == idle + 3 * per_task


def test_the_sweep_command_fires_them_on_the_project_engine():
    """``manage.py workflow_sweep`` (cron), like the qcluster's sweeper and Celery beat,
    calls ``get_engine().run_due_timers()``: the same sweep."""
    from django.core.management import call_command

    from ..snippets import isolated_engine

    with isolated_engine() as engine:
        engine.registry.register_definition(
            WorkflowDefinition(name="cron", version="1", initial_step="a", steps={"a": Approve()})
        )
        task = engine.start_workflow("cron").human_tasks.get()
        HumanTask.objects.filter(pk=task.pk).update(remind_at=task.created_at)
        call_command("workflow_sweep", verbosity=0)
    assert [e.payload["task_id"] for e in events("HumanTaskReminder")] == [task.pk]


def test_advance_time_moves_the_deadlines_of_one_instance_only(deadlines):
    mine, other = start(deadlines), start(deadlines)
    advance_time(timedelta(hours=9), deadlines, instance=mine.instance)
    assert [e.payload["task_id"] for e in events("HumanTaskReminder")] == [mine.pk]
    moved, kept = HumanTask.objects.get(pk=mine.pk), HumanTask.objects.get(pk=other.pk)
    assert moved.due_at == mine.due_at - timedelta(hours=9)
    assert (kept.due_at, kept.remind_at, kept.escalate_at) == (
        other.due_at,
        other.remind_at,
        other.escalate_at,
    )
