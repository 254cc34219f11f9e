"""Comments on the task pages: the app's page lists the instance's comments and adds one
(an employee who is not staff has no other page to ask for news on); the admin's task
page lists them read-only. Who reads and writes them is who may see the task."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from django_workflows.models import Comment, HumanTask, TaskStatus, WorkflowEvent

pytestmark = pytest.mark.django_db


def task_url(task):
    return reverse("django_workflows:task", args=[task.pk])


def comment_url(task):
    return reverse("django_workflows:comment", args=[task.pk])


def test_the_url_is_the_documented_one():
    assert comment_url(HumanTask(pk=7)) == "/workflows/tasks/7/comment/"


def test_the_task_page_lists_comments_and_adds_one(client, leave, employee, admin_engine):
    task = leave()
    admin_engine.add_comment(task.instance_id, employee, "Asked on the instance")
    client.force_login(employee)
    page = client.get(task_url(task)).content.decode()
    assert 'id="dwf-comments"' in page and "Asked on the instance" in page
    assert 'id="dwf-task-comment-form"' in page and 'enctype="multipart/form-data"' in page

    response = client.post(
        comment_url(task),
        {"text": "Any news?", "attachment": SimpleUploadedFile("note.txt", b"hello")},
    )

    assert response.status_code == 302
    assert response["Location"] == task_url(task) + "#dwf-comments"
    comment = Comment.objects.get(text="Any news?")
    assert (comment.task_id, comment.author) == (task.pk, employee)
    assert comment.attachment.name.endswith(".txt")
    assert WorkflowEvent.objects.filter(instance=task.instance, type="CommentAdded").count() == 2
    page = client.get(task_url(task)).content.decode()
    assert "Your comment was added." in page and "Any news?" in page
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN  # nothing else


def test_a_bad_comment_is_a_message_and_adds_nothing(client, leave, employee):
    task = leave()
    client.force_login(employee)
    for data in ({"text": ""}, {"text": "x" * 10_001}, {}):
        response = client.post(comment_url(task), data, follow=True)
        assert response.status_code == 200
        assert "No comment added:" in response.content.decode()
    assert not Comment.objects.exists()
    assert client.get(comment_url(task)).status_code == 405


def test_who_may_not_see_the_task_gets_a_404_and_adds_nothing(client, leave, outsider):
    task = leave()
    client.force_login(outsider)
    assert client.post(comment_url(task), {"text": "hi"}).status_code == 404
    assert (
        client.post(reverse("django_workflows:comment", args=[999999]), {"text": "x"}).status_code
        == 404
    )
    assert not Comment.objects.exists()


def test_the_admin_task_page_lists_the_comments_read_only(
    client, leave, employee, approver, admin_engine
):
    task = leave()
    admin_engine.add_comment(task.instance_id, employee, "Receipt attached", task_id=task.pk)
    approver.is_superuser = True
    approver.save()
    client.force_login(approver)
    page = client.get(f"/admin/django_workflows/humantask/{task.pk}/complete/").content.decode()
    assert 'id="dwf-comments"' in page and "Receipt attached" in page
    assert 'id="dwf-task-comment-form"' not in page  # the admin adds them on the instance page
