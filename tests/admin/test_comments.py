"""Comments in the admin (the task page's comment, the instance page's list and form)
and bulk approval from "My tasks"."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from django_workflows.models import Comment, HumanTask, TaskStatus, WorkflowEvent

from ..factories import StaffFactory
from . import workflows

pytestmark = pytest.mark.django_db

INBOX = "/admin/django_workflows/humantask/inbox/"
BULK = "/admin/django_workflows/humantask/bulk-complete/"


def complete_url(task):
    return f"/admin/django_workflows/humantask/{task.pk}/complete/"


def instance_url(instance):
    return f"/admin/django_workflows/workflowinstance/{instance.pk}/change/"


@pytest.fixture
def reject_needs_a_comment(monkeypatch):
    monkeypatch.setattr(workflows.Approve, "comment_required", ("Reject",), raising=False)


def test_the_task_page_stores_the_comment_with_the_completion(
    client, approver, waiting, reject_needs_a_comment
):
    _, task = waiting
    client.force_login(approver)
    page = client.get(complete_url(task))
    assert b'name="_comment"' in page.content and b"required to Reject" in page.content

    response = client.post(complete_url(task), {"_action": "Reject", "_comment": " "})
    assert response.status_code == 200
    assert "a comment is required to Reject" in response.content.decode()
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN

    response = client.post(complete_url(task), {"_action": "Reject", "_comment": "Too much"})
    assert response.status_code == 302
    comment = Comment.objects.get()
    assert (comment.task_id, comment.author, comment.text) == (task.pk, approver, "Too much")


def test_the_instance_page_lists_comments_and_adds_one(
    client, approver, waiting, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    instance, _ = waiting
    client.force_login(approver)
    upload = SimpleUploadedFile("note.txt", b"hello")
    response = client.post(
        f"/admin/django_workflows/workflowinstance/{instance.pk}/comment/",
        {"text": "Looks fine", "attachment": upload},
    )
    assert response.status_code == 302
    page = client.get(instance_url(instance)).content.decode()
    assert "Looks fine" in page and "note" in page and 'id="dwf-comment-form"' in page
    assert "CommentAdded" in page  # in the history
    with Comment.objects.get().attachment.open("rb") as stored:
        assert stored.read() == b"hello"


def test_an_empty_comment_or_an_unseen_instance_adds_nothing(client, approver, bare_staff, waiting):
    instance, _ = waiting
    client.force_login(approver)
    url = f"/admin/django_workflows/workflowinstance/{instance.pk}/comment/"
    assert client.get(url).status_code == 405
    response = client.post(url, {"text": ""}, follow=True)
    assert "No comment added" in response.content.decode()
    client.force_login(bare_staff)
    assert client.post(url, {"text": "hi"}).status_code == 403
    assert not Comment.objects.exists()


# -- bulk approval ------------------------------------------------------------------


def test_bulk_completes_the_selected_tasks_with_one_form(client, approver, start):
    tasks = [
        HumanTask.objects.get(instance=start("approval", amount=n), step_name="approve")
        for n in (10, 20, 30)
    ]
    client.force_login(approver)
    inbox = client.get(INBOX).content.decode()
    assert 'name="task"' in inbox and f'action="{BULK}"' in inbox
    ids = [tasks[0].pk, tasks[1].pk]
    page = client.get(BULK, {"task": ids})
    assert page.status_code == 200
    assert b'name="amount_approved"' in page.content and b'value="Approve"' in page.content

    response = client.post(
        BULK, {"task": ids, "_action": "Approve", "amount_approved": "5", "_comment": "ok"}
    )
    assert response.status_code == 302
    done = HumanTask.objects.filter(status=TaskStatus.COMPLETED)
    assert sorted(done.values_list("pk", flat=True)) == sorted(ids)
    assert all(task.result["amount_approved"] == 5 for task in done)
    assert Comment.objects.filter(text="ok").count() == 2
    assert HumanTask.objects.get(pk=tasks[2].pk).status == TaskStatus.OPEN


def test_bulk_shows_the_forms_errors_and_changes_nothing(client, approver, start):
    task = HumanTask.objects.get(instance=start("approval", amount=1), step_name="approve")
    client.force_login(approver)
    response = client.post(BULK, {"task": [task.pk], "_action": "Approve", "amount_approved": "-1"})
    assert response.status_code == 200 and b"errorlist" in response.content
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_bulk_reports_each_refusal_and_keeps_the_others(
    client, approver, other_manager, start, admin_engine
):
    first, second = (
        HumanTask.objects.get(instance=start("approval", amount=n), step_name="approve")
        for n in (1, 2)
    )
    client.force_login(approver)
    page = client.get(BULK, {"task": [first.pk, second.pk]})
    assert page.status_code == 200
    admin_engine.complete_task(second.pk, other_manager, {}, action="Reject")  # faster
    response = client.post(BULK, {"task": [first.pk, second.pk], "_action": "Approve"}, follow=True)
    text = response.content.decode()
    assert "1 task completed." in text
    assert f"(#{second.pk}) was not completed" in text
    assert HumanTask.objects.get(pk=first.pk).completed_by == approver


def test_tasks_of_different_steps_get_no_shared_form(client, approver, start):
    approve = HumanTask.objects.get(instance=start("approval", amount=1), step_name="approve")
    check = HumanTask.objects.get(instance=start("check"), step_name="check")
    workflows_user = approver
    workflows_user.is_superuser = True  # may complete both
    workflows_user.save()
    client.force_login(workflows_user)
    page = client.get(BULK, {"task": [approve.pk, check.pk]})
    assert b"dwf-bulk-not-shared" in page.content and b"dwf-bulk-form" not in page.content
    client.post(BULK, {"task": [approve.pk, check.pk], "_action": "Approve"})
    assert not HumanTask.objects.filter(status=TaskStatus.COMPLETED).exists()
    assert not WorkflowEvent.objects.filter(type="HumanTaskCompleted").exists()


def test_bulk_without_a_selection_goes_back_to_the_inbox(client, approver):
    client.force_login(approver)
    response = client.get(BULK, {"task": ["x"]})
    assert response.status_code == 302 and response["Location"] == INBOX


def test_the_bulk_page_of_a_step_without_a_form_shows_no_stray_text(client, admin_engine):
    """A step without a form has no media: the page once began with "None"."""
    client.force_login(StaffFactory(username="boss", is_superuser=True))
    task = HumanTask.objects.get(instance=admin_engine.start_workflow("check"))

    page = client.get(BULK, {"task": task.pk})

    assert page.status_code == 200
    text = page.content.decode()
    assert "None" not in text.split("<body", 1)[0]
    assert 'name="_complete"' in text
