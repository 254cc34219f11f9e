"""Comments (instances/{id}/comments/, tasks/{id}/comments/, complete's comment) and bulk
approval (tasks/bulk-complete/)."""

import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from django_workflows.models import Comment, HumanTask, TaskStatus, WorkflowEvent

from .conftest import API

pytestmark = pytest.mark.django_db

BULK = f"{API}/tasks/bulk-complete/"


def instance_comments(instance):
    return f"{API}/instances/{instance.pk}/comments/"


def task_comments(task):
    return f"{API}/tasks/{task.pk}/comments/"


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


# -- comments -----------------------------------------------------------------------


def test_the_starter_comments_on_the_instance_and_lists_it(client_for, starter, expense):
    client = client_for(starter)
    response = client.post(instance_comments(expense), {"text": "Any news?"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["author_name"], body["text"], body["task"], body["attachment"]) == (
        "starter",
        "Any news?",
        None,
        None,
    )
    listed = client.get(instance_comments(expense)).json()
    assert [c["id"] for c in listed["results"]] == [body["id"]]
    event = WorkflowEvent.objects.get(instance=expense, type="CommentAdded")
    assert event.payload["comment_id"] == body["id"]


def test_a_task_comment_with_a_file_goes_multipart(client_for, manager, task, media):
    upload = SimpleUploadedFile("receipt.txt", b"12.50 EUR", content_type="text/plain")
    response = client_for(manager).post(
        task_comments(task), {"text": "receipt attached", "attachment": upload}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["task"] == task.pk and "workflow-comments/" in body["attachment"]
    comment = Comment.objects.get()
    with comment.attachment.open("rb") as stored:
        assert stored.read() == b"12.50 EUR"
    # The task's comments are on the instance's list too; the task's list has only its own.
    client = client_for(manager)
    assert len(client.get(task_comments(task)).json()["results"]) == 1
    assert len(client.get(instance_comments(task.instance)).json()["results"]) == 1


def test_an_instance_or_task_the_user_may_not_see_is_404(client_for, outsider, expense, task):
    client = client_for(outsider)
    for url in (instance_comments(expense), task_comments(task)):
        assert client.get(url).status_code == 404
        assert client.post(url, {"text": "hi"}, format="json").status_code == 404
    for url in (f"{API}/instances/nope/comments/", f"{API}/instances/{uuid.uuid4()}/comments/"):
        assert client_for(outsider).get(url).status_code == 404
    assert client.get(f"{API}/tasks/abc/comments/").status_code == 404
    assert not Comment.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": ""},
        {"text": "   "},
        {"text": "x" * 10_001},
        {"text": "a\x00b"},
        {"text": ["x"]},
    ],
)
def test_bad_comments_are_400_and_store_nothing(client_for, starter, expense, body):
    response = client_for(starter).post(instance_comments(expense), body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid"
    assert not Comment.objects.exists()


def test_an_attachment_over_the_limit_is_400(client_for, starter, expense, settings, media):
    settings.DJANGO_WORKFLOWS = {"MAX_COMMENT_ATTACHMENT_BYTES": 4}
    upload = SimpleUploadedFile("big.bin", b"12345")
    response = client_for(starter).post(
        instance_comments(expense), {"text": "big", "attachment": upload}, format="multipart"
    )
    assert response.status_code == 400
    assert "attachment" in response.json()["errors"]
    assert not Comment.objects.exists()


def test_complete_stores_its_comment(client_for, manager, task):
    response = client_for(manager).post(
        f"{API}/tasks/{task.pk}/complete/",
        {"data": {"approved": False}, "comment": "too expensive"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert Comment.objects.get().text == "too expensive"
    assert "CommentAdded" in [e["type"] for e in response.json()["events"]]


# -- bulk approval ------------------------------------------------------------------


@pytest.fixture
def expenses(api_engine, starter, managers):
    instances = [
        api_engine.start_workflow("expense", initial_data={"amount": n}, started_by=starter)
        for n in range(3)
    ]
    return [instance.human_tasks.get() for instance in instances]


def test_bulk_complete_reports_each_task(client_for, manager, starter, expenses, api_engine):
    first, second, third = expenses
    api_engine.complete_task(second.pk, manager, {"approved": False})
    response = client_for(manager).post(
        BULK,
        {
            "task_ids": [first.pk, second.pk, third.pk, third.pk, 987654],
            "data": {"approved": False},
            "comment": "not this quarter",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["completed"], body["refused"]) == (2, 2)
    assert [(r["task_id"], r["code"]) for r in body["results"]] == [
        (first.pk, "completed"),
        (second.pk, "conflict"),
        (third.pk, "completed"),
        (987654, "not_found"),
    ]
    assert body["results"][0]["instance_id"] == str(first.instance_id)
    assert HumanTask.objects.filter(status=TaskStatus.COMPLETED).count() == 3
    assert Comment.objects.filter(text="not this quarter").count() == 2


def test_bulk_complete_by_someone_who_may_not(client_for, starter, outsider, expenses):
    ids = [task.pk for task in expenses]
    body = client_for(starter).post(BULK, {"task_ids": ids}, format="json").json()
    assert {r["code"] for r in body["results"]} == {"permission_denied"}
    body = client_for(outsider).post(BULK, {"task_ids": ids}, format="json").json()
    assert {r["code"] for r in body["results"]} == {"not_found"}  # tasks they may not see
    assert not HumanTask.objects.filter(status=TaskStatus.COMPLETED).exists()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"task_ids": []},
        {"task_ids": "1"},
        {"task_ids": ["abc"]},
        {"task_ids": list(range(501))},
        {"task_ids": [1], "data": []},
        {"task_ids": [1], "action": ""},
        {"task_ids": [1], "comment": "x" * 10_001},
    ],
)
def test_bulk_complete_bad_input_is_400(client_for, manager, expenses, body):
    response = client_for(manager).post(BULK, body, format="json")
    assert response.status_code == 400, response.json()
    assert not HumanTask.objects.filter(status=TaskStatus.COMPLETED).exists()


def test_bulk_complete_needs_a_login(client_for, expenses):
    response = client_for().post(BULK, {"task_ids": [expenses[0].pk]}, format="json")
    assert response.status_code in (401, 403)
