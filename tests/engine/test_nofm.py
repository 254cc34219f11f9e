"""N-of-M approvals: a human step with ``assignees`` opens one task per assignee and
completes when its ``completion`` is reached or its ``veto`` matches (engine/nofm.py)."""

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_workflows import BaseHumanStep, Edge, WorkflowDefinition, WorkflowStatus
from django_workflows.exceptions import (
    ConditionError,
    DefinitionError,
    InvalidAssignee,
    TaskNotOpen,
)
from django_workflows.models import HumanTask, StepRun, TaskStatus, WorkflowEvent

from ..factories import GroupFactory, UserFactory
from ..workflows import Record, calls

pytestmark = pytest.mark.django_db


class Review(BaseHumanStep):
    title = "Review the contract"
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    fields = ("comment",)


def review(name="contract", **options):
    return WorkflowDefinition(
        name=name,
        version="1",
        initial_step="review",
        steps={"review": Review(**options), "sign": Record(), "rework": Record()},
        edges=[
            Edge("review", "sign", condition="context.get('approved') == True"),
            Edge("review", "rework", condition="context.get('approved') != True"),
        ],
    )


@pytest.fixture
def people(db):
    return [UserFactory(username=f"reviewer{i}") for i in range(3)]


def start(engine, people=None, **options):
    engine.registry.register_definition(review(**options))
    return engine.start_workflow("contract", initial_data={"amount": 10})


def tasks_of(instance):
    return list(HumanTask.objects.filter(instance=instance).order_by("slot"))


def events(instance, type_):
    return list(WorkflowEvent.objects.filter(instance=instance, type=type_).order_by("id"))


def test_two_of_three_opens_a_task_each_and_moves_on_at_the_second(engine, people):
    instance = start(engine, assignees=people, completion=2)
    tasks = tasks_of(instance)
    assert [(t.slot, t.assignee) for t in tasks] == list(enumerate(people))
    assert all(t.title == "Review the contract" for t in tasks)
    assert len(events(instance, "HumanTaskCreated")) == 3
    assert {e.payload["task_id"] for e in events(instance, "HumanTaskCreated")} == {
        t.pk for t in tasks
    }

    after_one = engine.complete_task(tasks[0].pk, people[0], {"comment": "ok"}, action="Approve")
    assert after_one.status == WorkflowStatus.WAITING
    assert after_one.current_steps == ["review"]
    (first,) = after_one.context["review"]
    assert first["user"] == people[0].pk
    assert first["action"] == "Approve"
    assert first["data"] == {"comment": "ok", "approved": True}
    assert "approved" not in after_one.context  # only the deciding completion writes fields
    assert calls == []

    done = engine.complete_task(tasks[2].pk, people[2], action="Approve")
    assert done.status == WorkflowStatus.COMPLETED
    assert calls == [("", "sign")]
    assert done.context["approved"] is True
    assert [r["user"] for r in done.context["review"]] == [people[0].pk, people[2].pk]
    assert all(r["at"] for r in done.context["review"])
    left = HumanTask.objects.get(pk=tasks[1].pk)
    assert (left.status, left.close_reason) == (TaskStatus.CANCELED, "completion reached")
    (canceled,) = events(instance, "HumanTaskCanceled")
    assert canceled.step_name == "review"
    assert canceled.payload == {"task_id": left.pk, "reason": "completion reached"}
    assert len(events(instance, "HumanTaskCompleted")) == 2
    run = StepRun.objects.get(instance=instance, step_name="review")
    assert run.status == "completed"
    assert len(run.changes["review"]) == 2
    with pytest.raises(TaskNotOpen):
        engine.complete_task(left.pk, people[1], action="Approve")


def test_all_waits_for_everyone_and_groups_get_a_task_of_their_own(engine, people):
    legal = UserFactory(username="lawyer", groups=[GroupFactory(name="legal")])
    instance = start(engine, assignees=[people[0], "legal"])
    user_task, group_task = tasks_of(instance)
    assert user_task.assignee == people[0] and not user_task.candidate_groups.exists()
    assert group_task.assignee is None
    assert [g.name for g in group_task.candidate_groups.all()] == ["legal"]

    # Named by its step, the task completed is the one the user may complete.
    waiting = engine.complete_human_task(
        instance.id, "review", legal.pk, action="Approve", check_permission=True
    )
    assert waiting.status == WorkflowStatus.WAITING
    assert HumanTask.objects.get(pk=group_task.pk).completed_by == legal
    done = engine.complete_human_task(
        instance.id, "review", people[0].pk, action="Approve", check_permission=True
    )
    assert done.status == WorkflowStatus.COMPLETED
    assert [r["user"] for r in done.context["review"]] == [legal.pk, people[0].pk]
    assert not events(instance, "HumanTaskCanceled")


def test_any_takes_the_first_answer(engine, people):
    instance = start(engine, assignees=people, completion="any")
    tasks = tasks_of(instance)
    done = engine.complete_task(tasks[1].pk, people[1], action="Reject")
    assert done.status == WorkflowStatus.COMPLETED
    assert calls == [("", "rework")]
    assert {t.status for t in tasks_of(instance)} == {"completed", "canceled"}
    assert len(events(instance, "HumanTaskCanceled")) == 2


def test_a_veto_completes_the_step_at_once(engine, people):
    instance = start(
        engine, assignees=people, completion="all", veto="result.get('approved') == False"
    )
    tasks = tasks_of(instance)
    engine.complete_task(tasks[0].pk, people[0], action="Approve")
    done = engine.complete_task(tasks[1].pk, people[1], {"comment": "clause 7"}, action="Reject")
    assert done.status == WorkflowStatus.COMPLETED
    assert calls == [("", "rework")]
    assert done.context["approved"] is False and done.context["comment"] == "clause 7"
    last = HumanTask.objects.get(pk=tasks[2].pk)
    assert (last.status, last.close_reason) == (TaskStatus.CANCELED, "vetoed")
    assert events(instance, "HumanTaskCanceled")[0].payload["reason"] == "vetoed"


def test_the_veto_reads_the_action(engine, people):
    instance = start(engine, assignees=people[:2], veto="result.get('action') == 'Reject'")
    done = engine.complete_task(tasks_of(instance)[0].pk, people[0], action="Reject")
    assert done.status == WorkflowStatus.COMPLETED


def test_one_assignee_is_todays_single_task(engine, people):
    instance = start(engine, assignees=[people[0].pk])
    done = engine.complete_human_task(instance.id, "review", people[0].pk, action="Approve")
    assert done.status == WorkflowStatus.COMPLETED
    assert done.context["approved"] is True
    assert len(done.context["review"]) == 1


def test_a_callable_gives_the_assignees_from_the_context(engine, people):
    instance = start(engine, assignees=lambda ctx: [ctx.get("amount") and people[1].pk, "legal"])
    assert [(t.assignee_id, t.slot) for t in tasks_of(instance)] == [(people[1].pk, 0), (None, 1)]


def test_no_assignees_at_run_time_fails_the_step_clearly_and_retry_opens_them(engine, people):
    found: list = []
    instance = start(engine, assignees=lambda ctx: list(found))
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "review"
    assert "assignees is empty" in instance.error
    assert instance.context == {"amount": 10}
    assert not HumanTask.objects.exists()
    found.extend(people)
    retried = engine.retry(instance.id)
    assert retried.status == WorkflowStatus.WAITING
    assert len(tasks_of(instance)) == 3


def test_a_number_above_the_assignees_at_run_time_fails_the_step(engine, people):
    instance = start(engine, assignees=lambda ctx: people[:2], completion=3)
    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.FAILED
    assert "completion=3 but only 2 assignees" in instance.error


def test_an_assignee_that_is_no_user_is_refused_at_the_start(engine, people):
    engine.registry.register_definition(review(assignees=lambda ctx: [ctx.get("who")]))
    with pytest.raises(InvalidAssignee, match="not users"):
        engine.start_workflow("contract", initial_data={"who": 424242})
    with pytest.raises(InvalidAssignee, match="neither a user"):
        engine.start_workflow("contract", initial_data={"who": [1]})
    assert not HumanTask.objects.exists()


def test_one_person_answers_once(engine, people):
    both = UserFactory(username="both", groups=[GroupFactory(name="legal")])
    instance = start(engine, assignees=[both, "legal", people[0]])
    engine.complete_human_task(instance.id, "review", both.pk, action="Approve")
    with pytest.raises(PermissionDenied, match="already answered a task"):
        engine.complete_task(tasks_of(instance)[1].pk, both, action="Approve")
    assert len(HumanTask.objects.filter(status="open")) == 2


def test_the_permission_rule_holds_per_task(engine, people):
    instance = start(engine, assignees=people[:2])
    with pytest.raises(PermissionDenied):
        engine.complete_task(
            tasks_of(instance)[0].pk, people[1], action="Approve", check_permission=True
        )


def test_the_steps_own_key_is_not_a_field(engine, people):
    engine.registry.register_definition(
        WorkflowDefinition(
            name="free",
            version="1",
            initial_step="review",
            steps={"review": BaseHumanStep(assignees=people[:2])},
        )
    )
    instance = engine.start_workflow("free")
    with pytest.raises(ValidationError, match="collects its results"):
        engine.complete_human_task(instance.id, "review", people[0].pk, {"review": "mine"})
    assert HumanTask.objects.filter(status="open").count() == 2


def test_a_veto_that_raises_fails_the_step_and_cancels_the_rest(engine, people):
    instance = start(engine, assignees=people, veto="result.get('comment')[0] == 'x'")
    failed = engine.complete_task(tasks_of(instance)[0].pk, people[0], action="Approve")
    assert failed.status == WorkflowStatus.FAILED
    assert "result.get('comment')" in failed.error
    assert failed.current_steps == []
    assert [t.close_reason for t in tasks_of(instance)] == ["", "step failed", "step failed"]


def test_the_queries_do_not_grow_with_the_assignees(engine):
    users = [UserFactory() for _ in range(12)]
    counts = []
    for name, n in (("few", 2), ("many", 12)):
        engine.registry.register_definition(review(name=name, assignees=users[:n]))
        with CaptureQueriesContext(connection) as queries:
            engine.start_workflow(name)
        counts.append(len(queries))
    assert counts[0] == counts[1]
    assert HumanTask.objects.count() == 14


def test_a_rework_loop_starts_a_new_list(engine, people):
    engine.registry.register_definition(
        WorkflowDefinition(
            name="loop",
            version="1",
            initial_step="review",
            steps={"review": Review(assignees=people[:1]), "done": Record()},
            edges=[
                Edge("review", "done", condition="context.get('approved') == True"),
                Edge("review", "review", condition="context.get('approved') != True"),
            ],
        )
    )
    instance = engine.start_workflow("loop")
    again = engine.complete_human_task(instance.id, "review", people[0].pk, action="Reject")
    assert again.status == WorkflowStatus.WAITING and len(again.context["review"]) == 1
    done = engine.complete_human_task(instance.id, "review", people[0].pk, action="Approve")
    assert done.status == WorkflowStatus.COMPLETED
    assert [r["action"] for r in done.context["review"]] == ["Approve"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"assignees": ["a"], "completion": 0}, "completion must be"),
        ({"assignees": ["a"], "completion": True}, "completion must be"),
        ({"assignees": ["a"], "completion": "most"}, "completion must be"),
        ({"assignees": ["a", "b"], "completion": 3}, "completion=3 but only 2"),
        ({"assignees": []}, "assignees is empty"),
        ({"assignees": "legal"}, "must be a list"),
        ({"completion": "any"}, "need assignees"),
        ({"veto": "result.get('x')"}, "need assignees"),
    ],
)
def test_bad_declarations_fail_at_once(options, message):
    with pytest.raises(DefinitionError, match=message):
        BaseHumanStep(**options)


def test_a_veto_typo_fails_at_declaration():
    with pytest.raises(ConditionError, match=r"veto.*name 'approved' is not defined"):
        BaseHumanStep(assignees=["a"], veto="approved == False")
    with pytest.raises(ConditionError, match=r"'context' is not defined; use result\.get"):
        BaseHumanStep(assignees=["a"], veto="context.get('approved') == False")


def test_class_attributes_are_checked_too():
    class Board(BaseHumanStep):
        assignees = ("legal", "finance")
        completion = "any"
        veto = "result.get('approved') == False"

    assert Board().veto_condition({"approved": False}) is True
    Board.completion = -1
    with pytest.raises(DefinitionError):
        Board()


def test_assignees_and_candidate_groups_together_are_refused():
    with pytest.raises(DefinitionError, match="declares assignees and candidate_groups"):
        review(assignees=["a"], candidate_groups=["b"]).validate()


def test_the_graph_snapshot_shows_the_completion_rule():
    step = BaseHumanStep(assignees=["a", "b"], completion=1, veto="result.get('no')")
    assert step.describe()["completion"] == 1
    assert step.describe()["veto"] == "result.get('no')"
    assert "completion" not in BaseHumanStep().describe()


def test_functions_as_class_attributes_are_called_with_the_context_or_result(engine, people):
    def approvers(context):
        return [people[0].pk, people[1].pk]

    def rejected(result):
        return result.get("approved") is False

    class Step(Review):
        assignees = approvers
        veto = rejected

    engine.registry.register_definition(
        WorkflowDefinition(
            name="attrs", version="1", initial_step="review", steps={"review": Step()}
        )
    )
    instance = engine.start_workflow("attrs")
    assert [t.assignee_id for t in tasks_of(instance)] == [people[0].pk, people[1].pk]
    done = engine.complete_task(tasks_of(instance)[1].pk, people[1], action="Reject")
    assert done.status == WorkflowStatus.COMPLETED
    assert tasks_of(instance)[0].close_reason == "vetoed"


def test_task_progress_tells_how_far_the_step_is(engine, people):
    instance = start(engine, assignees=people, completion=2)
    tasks = tasks_of(instance)
    assert engine.task_progress(tasks[0].pk) == {
        "rule": 2,
        "needed": 2,
        "completed": 0,
        "open": 3,
        "canceled": 0,
    }
    engine.complete_task(tasks[0].pk, people[0], action="Approve")
    assert async_to_sync(engine.atask_progress)(tasks[1].pk)["completed"] == 1
    engine.complete_task(tasks[1].pk, people[1], action="Approve")
    assert engine.task_progress(tasks[2].pk) == {
        "rule": 2,
        "needed": 2,
        "completed": 2,
        "open": 0,
        "canceled": 1,
    }


def test_task_progress_of_a_one_task_step_is_none(engine, people):
    engine.registry.register_definition(
        WorkflowDefinition(
            name="single", version="1", initial_step="a", steps={"a": BaseHumanStep()}
        )
    )
    instance = engine.start_workflow("single")
    assert engine.task_progress(instance.human_tasks.get().pk) is None


def test_a_substitute_answers_for_the_absent_assignee_and_for_themselves_once_each(engine, people):
    from datetime import timedelta

    from django.utils import timezone

    from django_workflows.substitutes import add_substitute

    absent, deputy, _ = people
    deputy.groups.add(GroupFactory(name="legal"))
    now = timezone.now()
    add_substitute(absent, deputy, now - timedelta(days=1), now + timedelta(days=1))
    instance = start(engine, assignees=[absent, deputy, "legal"], completion=2)
    tasks = tasks_of(instance)
    engine.complete_task(tasks[1].pk, deputy, action="Approve", check_permission=True)
    with pytest.raises(PermissionDenied, match="you already answered"):
        engine.complete_task(tasks[2].pk, deputy, action="Approve", check_permission=True)
    engine.complete_task(tasks[0].pk, deputy, action="Approve", check_permission=True)
    done = HumanTask.objects.get(pk=tasks[0].pk)
    assert (done.completed_by, done.completed_on_behalf_of) == (deputy, absent)
    answers = engine.get_instance(instance.id).context["review"]
    assert [(a["user"], a.get("on_behalf_of")) for a in answers] == [
        (deputy.pk, None),
        (deputy.pk, absent.pk),
    ]
    completed = events(instance, "HumanTaskCompleted")
    assert [e.payload["on_behalf_of_user_id"] for e in completed] == [None, absent.pk]
