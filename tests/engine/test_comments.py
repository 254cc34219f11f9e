"""Comments (engine.add_comment, a completion's comment, comment_required) and bulk
approval (engine.complete_tasks)."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile

from django_workflows import BaseHumanStep, Edge, WorkflowDefinition
from django_workflows.engine.bulk import MAX_TASKS
from django_workflows.exceptions import (
    DefinitionError,
    InstanceNotFound,
    InvalidAssignee,
    TaskNotFound,
)
from django_workflows.models import Comment, HumanTask, TaskStatus, WorkflowEvent

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


class Review(BaseHumanStep):
    title = "Review"
    candidate_groups = ("managers",)
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    comment_required = ("Reject",)


def review(version="1"):
    return WorkflowDefinition(
        name="bulk_review", version=version, initial_step="review", steps={"review": Review()}
    )


@pytest.fixture
def started(engine, user):
    engine.registry.register_definition(review())

    def start(n=1):
        return [engine.start_workflow("bulk_review", started_by=user) for _ in range(n)]

    return start


def task_of(instance):
    return HumanTask.objects.get(instance=instance)


# -- comments -----------------------------------------------------------------------


def test_a_user_who_sees_the_instance_comments_on_it_and_the_history_says_so(
    engine, started, user, bus, django_capture_on_commit_callbacks
):
    instance = started()[0]
    with django_capture_on_commit_callbacks(execute=True):
        comment = engine.add_comment(instance.pk, user, "  Please hurry.  ")
    assert (comment.instance_id, comment.task_id, comment.author) == (instance.pk, None, user)
    assert comment.text == "Please hurry."
    event = WorkflowEvent.objects.get(instance=instance, type="CommentAdded")
    assert event.payload == {
        "comment_id": comment.pk,
        "task_id": None,
        "user_id": user.pk,
        "excerpt": "Please hurry.",
    }
    assert [e.type for e in bus.events] == ["CommentAdded"]


def test_a_task_comment_with_an_attachment(engine, started, manager, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    task = task_of(started()[0])
    comment = engine.add_comment(
        task.instance_id,
        manager,
        "see the receipt",
        task_id=task.pk,
        attachment=ContentFile(b"%PDF-1.4", name="../receipt.pdf"),
    )
    assert comment.task == task
    assert comment.attachment.name.startswith("workflow-comments/")
    assert comment.attachment.name.endswith(".pdf") and ".." not in comment.attachment.name
    with comment.attachment.open("rb") as stored:
        assert stored.read() == b"%PDF-1.4"
    event = WorkflowEvent.objects.get(type="CommentAdded")
    assert (event.step_name, event.payload["task_id"]) == ("review", task.pk)


def test_who_may_not_see_may_not_comment(engine, started, outsider):
    instance = started()[0]
    with pytest.raises(PermissionDenied):
        engine.add_comment(instance.pk, outsider, "hello")
    with pytest.raises(PermissionDenied):
        engine.add_comment(instance.pk, outsider, "hello", task_id=task_of(instance).pk)
    with pytest.raises(PermissionDenied):
        engine.add_comment(instance.pk, None, "hello")
    assert not Comment.objects.exists()


@pytest.mark.parametrize("text", ["", "   ", "x" * 10_001, None, 42])
def test_a_comment_needs_1_to_10000_characters(engine, started, user, text):
    instance = started()[0]
    with pytest.raises(ValidationError) as info:
        engine.add_comment(instance.pk, user, text)
    assert "text" in info.value.message_dict
    assert not Comment.objects.exists()


def test_an_attachment_over_the_limit_is_refused(engine, started, user, settings):
    settings.DJANGO_WORKFLOWS = {"MAX_COMMENT_ATTACHMENT_BYTES": 3}
    instance = started()[0]
    with pytest.raises(ValidationError, match="at most 3 bytes"):
        engine.add_comment(instance.pk, user, "x", attachment=ContentFile(b"1234", name="a"))
    assert not Comment.objects.exists()


def test_unknown_instance_or_a_task_of_another_instance_is_not_found(engine, started, user):
    first, second = started(2)
    with pytest.raises(InstanceNotFound):
        engine.add_comment("not-a-uuid", user, "x")
    with pytest.raises(TaskNotFound):
        engine.add_comment(first.pk, user, "x", task_id=task_of(second).pk)


def test_a_completion_stores_its_comment_in_the_same_transition(engine, started, manager):
    task = task_of(started()[0])
    engine.complete_task(
        task.pk, manager, action="Reject", check_permission=True, comment="Over budget"
    )
    comment = Comment.objects.get()
    assert (comment.task_id, comment.author, comment.text) == (task.pk, manager, "Over budget")
    types = list(
        WorkflowEvent.objects.filter(instance=task.instance).values_list("type", flat=True)
    )
    assert types.index("CommentAdded") == types.index("HumanTaskCompleted") + 1


def test_comment_required_refuses_a_rejection_without_one(engine, started, manager):
    task = task_of(started()[0])
    with pytest.raises(ValidationError) as info:
        engine.complete_task(task.pk, manager, action="Reject", comment="  ")
    assert info.value.message_dict == {"comment": ["a comment is required to Reject"]}
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN
    engine.complete_task(task.pk, manager, action="Approve")  # approving needs none
    assert task_of(task.instance).status == TaskStatus.COMPLETED


def test_comment_required_true_covers_every_completion(engine, manager):
    engine.registry.register_definition(
        WorkflowDefinition(
            name="note",
            version="1",
            initial_step="a",
            steps={"a": BaseHumanStep(fields=["ok"], comment_required=True)},
        )
    )
    task = task_of(engine.start_workflow("note"))
    with pytest.raises(ValidationError, match="a comment is required to complete this task"):
        engine.complete_task(task.pk, manager, {"ok": 1})
    engine.complete_task(task.pk, manager, {"ok": 1}, comment="done")
    assert Comment.objects.get().text == "done"


def test_a_refused_completion_leaves_no_comment(engine, started, manager, outsider):
    task = task_of(started()[0])
    with pytest.raises(ValidationError):  # an action the step does not have
        engine.complete_task(task.pk, manager, action="Nope", comment="why")
    with pytest.raises(PermissionDenied):
        engine.complete_task(task.pk, outsider, check_permission=True, comment="why")
    with pytest.raises(ValidationError):
        engine.complete_task(task.pk, manager, action="Reject", comment="x" * 10_001)
    assert not Comment.objects.exists()
    assert not WorkflowEvent.objects.filter(type="CommentAdded").exists()


class ToWhom(BaseHumanStep):
    def get_assignee(self, context):
        return context.get("who")


def test_a_completion_refused_after_the_comment_was_written_rolls_it_back(engine, manager):
    # The comment row is written before routing; routing refuses the data (an
    # assignee that is no user) and the whole transition, comment included, is undone.
    engine.registry.register_definition(
        WorkflowDefinition(
            name="handover",
            version="1",
            initial_step="a",
            steps={"a": BaseHumanStep(fields=["who"]), "b": ToWhom()},
            edges=[Edge("a", "b")],
        )
    )
    task = task_of(engine.start_workflow("handover"))
    with pytest.raises(InvalidAssignee):
        engine.complete_task(task.pk, manager, {"who": 987654}, comment="over to you")
    assert not Comment.objects.exists()
    assert not WorkflowEvent.objects.filter(type="CommentAdded").exists()
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_comment_required_must_name_actions_of_the_step(engine):
    with pytest.raises(DefinitionError, match="comment_required"):
        engine.registry.register_definition(
            WorkflowDefinition(
                name="bad",
                version="1",
                initial_step="a",
                steps={"a": BaseHumanStep(actions={"Ok": {}}, comment_required=["Reject"])},
            )
        )


# -- bulk approval ------------------------------------------------------------------


def test_bulk_completes_each_task_and_one_refusal_rolls_back_nothing(
    engine, started, manager, outsider
):
    first, second, third = (task_of(i) for i in started(3))
    engine.complete_task(second.pk, manager, action="Approve")  # no longer open
    results = engine.complete_tasks(
        [first.pk, second.pk, third.pk, first.pk, 999_999], manager, action="Approve"
    )
    assert [(r.task_id, r.completed, r.code) for r in results] == [
        (first.pk, True, "completed"),
        (second.pk, False, "conflict"),
        (third.pk, True, "completed"),
        (999_999, False, "not_found"),
    ]
    assert results[0].instance_id == first.instance_id
    assert "has no open human task" in results[1].reason
    assert HumanTask.objects.filter(status=TaskStatus.COMPLETED).count() == 3


def test_bulk_reports_per_task_reasons(engine, started, manager, user):
    mine, theirs, hidden = (task_of(i) for i in started(3))
    engine.claim_task(theirs.pk, UserFactory(username="other", groups=[manager.groups.get()]))
    # The starter sees the tasks but may not complete them.
    results = engine.complete_tasks([mine.pk], user, action="Approve")
    assert (results[0].completed, results[0].code) == (False, "permission_denied")
    results = engine.complete_tasks(
        [mine.pk, theirs.pk, "abc"], manager, action="Reject", comment=""
    )
    assert [r.code for r in results] == ["invalid", "permission_denied", "not_found"]
    assert results[0].reason == "comment: a comment is required to Reject"
    results = engine.complete_tasks([mine.pk], manager, action="Reject", comment="no")
    assert results[0].completed
    assert Comment.objects.get().task_id == mine.pk
    assert HumanTask.objects.get(pk=hidden.pk).status == TaskStatus.OPEN


def test_bulk_hides_tasks_the_user_may_not_see(engine, started, outsider):
    task = task_of(started()[0])
    [result] = engine.complete_tasks([task.pk], outsider)
    assert (result.completed, result.code) == (False, "not_found")


@pytest.mark.parametrize(
    ("ids", "message"),
    [([], "at least one"), ("12", "a list"), (list(range(MAX_TASKS + 1)), "at most 500")],
)
def test_bulk_refuses_a_bad_batch_as_a_whole(engine, manager, ids, message):
    with pytest.raises(ValidationError, match=message):
        engine.complete_tasks(ids, manager)


def test_bulk_needs_a_user(engine, started):
    with pytest.raises(PermissionDenied):
        engine.complete_tasks([task_of(started()[0]).pk], None)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_async_twins(wf_registry, bus):
    from asgiref.sync import sync_to_async
    from django.db import connections

    from django_workflows import LocalExecutionEngine

    from ..factories import GroupFactory

    engine = LocalExecutionEngine(wf_registry, event_bus=bus)
    engine.registry.register_definition(review())
    manager = await sync_to_async(UserFactory)(
        groups=[await sync_to_async(GroupFactory)(name="managers")]
    )
    instance = await engine.astart_workflow("bulk_review", started_by=manager)
    comment = await engine.aadd_comment(instance.pk, manager, "async")
    task = await HumanTask.objects.aget(instance=instance)
    [result] = await engine.acomplete_tasks([task.pk], manager, action="Approve")
    assert result.completed and await Comment.objects.filter(pk=comment.pk).aexists()
    await sync_to_async(connections.close_all)()


def test_an_n_of_m_answer_keeps_its_comment_and_its_requirement(engine):
    voters = [UserFactory(username=f"voter{i}") for i in range(2)]
    engine.registry.register_definition(
        WorkflowDefinition(
            name="vote",
            version="1",
            initial_step="vote",
            steps={
                "vote": BaseHumanStep(
                    actions={"Yes": {"ok": True}, "No": {"ok": False}},
                    assignees=[voter.pk for voter in voters],
                    comment_required=["No"],
                )
            },
        )
    )
    instance = engine.start_workflow("vote")
    first, second = HumanTask.objects.filter(instance=instance).order_by("pk")
    with pytest.raises(ValidationError, match="a comment is required to No"):
        engine.complete_task(first.pk, first.assignee, action="No")
    engine.complete_task(first.pk, first.assignee, action="No", comment="too early")
    engine.complete_task(second.pk, second.assignee, action="Yes", comment="fine")
    assert list(Comment.objects.order_by("pk").values_list("task_id", "text")) == [
        (first.pk, "too early"),
        (second.pk, "fine"),
    ]
