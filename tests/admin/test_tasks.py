"""Human tasks in the admin: the inbox, the completion page, claim and unclaim, the list."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_workflows import TaskNotOpen, WorkflowStatus
from django_workflows.models import HumanTask, TaskStatus, WorkflowEvent, WorkflowInstance

from ..factories import StaffFactory
from .conftest import grant

pytestmark = pytest.mark.django_db

INBOX = reverse("admin:django_workflows_humantask_inbox")
TASKS = reverse("admin:django_workflows_humantask_changelist")


def task_url(task):
    return reverse("admin:django_workflows_humantask_complete", args=[task.pk])


def claim_url(task):
    return reverse("admin:django_workflows_humantask_claim", args=[task.pk])


def unclaim_url(task):
    return reverse("admin:django_workflows_humantask_unclaim", args=[task.pk])


def texts(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def inbox_ids(client):
    response = client.get(INBOX)
    assert response.status_code == 200
    return {task.pk for task in response.context["tasks"]}


def state(task):
    task.refresh_from_db()
    instance = WorkflowInstance.objects.get(pk=task.instance_id)
    return task.status, instance.status


# -- the inbox ----------------------------------------------------------------------------


def test_inbox_shows_only_the_tasks_the_user_may_complete(
    client, start, approver, accountant, admin_engine
):
    approval = HumanTask.objects.get(instance=start("approval", amount=1))  # managers
    check = HumanTask.objects.get(instance=start("check"))  # no assignee, no group
    claimed = HumanTask.objects.get(instance=start("approval", amount=2))
    someone = StaffFactory(username="someone")
    claimed.claimed_by = someone  # test setup: claimed by another manager
    claimed.save(update_fields=["claimed_by"])
    done = HumanTask.objects.get(instance=start("approval", amount=3))
    admin_engine.complete_task(done.pk, approver, {}, action="Approve")

    client.force_login(approver)
    mine = inbox_ids(client)
    client.force_login(accountant)
    theirs = inbox_ids(client)
    client.force_login(grant(StaffFactory(username="overrider"), "complete_any_task"))
    any_task = inbox_ids(client)

    assert mine == {approval.pk}  # not "check": staff status opens no task
    assert theirs == set()  # view permissions do not make a task completable
    assert any_task == {approval.pk, check.pk, claimed.pk}


def test_inbox_shows_due_dates_and_marks_overdue_tasks(client, start, approver):
    late = HumanTask.objects.get(instance=start("approval", amount=1))
    on_time = HumanTask.objects.get(instance=start("approval", amount=2))
    HumanTask.objects.filter(pk=late.pk).update(due_at=timezone.now() - timedelta(hours=3))
    client.force_login(approver)

    response = client.get(INBOX)

    html = response.content.decode()
    rows = {task.pk: task for task in response.context["tasks"]}
    assert rows[late.pk].overdue is True
    assert rows[on_time.pk].overdue is False
    assert [t.pk for t in response.context["tasks"]] == [late.pk, on_time.pk]  # due first
    assert html.count('class="dwf-task dwf-overdue"') == 1
    assert html.count('<span class="dwf-badge dwf-badge-overdue">overdue</span>') == 1
    assert timezone.localtime(on_time.due_at).strftime("%Y-%m-%d %H:%M") in html


def _inbox_queries(client, start, count):
    while HumanTask.objects.count() < count:
        start("approval", amount=HumanTask.objects.count())
    with CaptureQueriesContext(connection) as queries:
        response = client.get(INBOX)
    assert len(response.context["tasks"]) == count
    return len(queries)


def test_inbox_queries_do_not_grow_with_the_tasks(client, start, approver):
    client.force_login(approver)

    assert _inbox_queries(client, start, 3) == _inbox_queries(client, start, 12)


def test_the_inbox_is_open_to_staff_without_model_permissions(
    client, start, other_manager, outsider
):
    approval = HumanTask.objects.get(instance=start("approval", amount=1))
    start("check")

    client.force_login(other_manager)
    staff_view = inbox_ids(client)
    client.force_login(outsider)
    outsider_view = client.get(INBOX)

    assert staff_view == {approval.pk}
    assert outsider_view.status_code == 302  # to the admin login


# -- completing -----------------------------------------------------------------------------


def test_task_page_renders_the_form_and_one_button_per_action(client, waiting, approver):
    _, task = waiting
    client.force_login(approver)

    response = client.get(task_url(task))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="comments"' in html
    assert 'name="amount_approved"' in html
    assert '<button type="submit" name="_action" value="Approve"' in html
    assert '<button type="submit" name="_action" value="Reject"' in html
    assert 'name="_complete"' not in html
    # Both buttons set ``approved``: the form does not ask for it.
    assert '<input type="hidden" name="approved" id="id_approved">' in html
    assert 'type="checkbox"' not in html
    assert "&quot;amount&quot;: 120" in html  # the context the approver decides on
    assert "Check the amount, then approve or reject." in html


def test_approve_button_completes_the_task_and_the_instance_moves_on(client, waiting, approver):
    instance, task = waiting
    client.force_login(approver)

    response = client.post(
        task_url(task), {"_action": "Approve", "comments": "fine", "amount_approved": "120"}
    )

    assert response.status_code == 302
    assert response.url == INBOX
    assert state(task) == (TaskStatus.COMPLETED, WorkflowStatus.COMPLETED)
    assert task.completed_by == approver
    assert task.result == {"approved": True, "comments": "fine", "amount_approved": 120}
    instance.refresh_from_db()
    assert instance.context["paid"] == 120
    assert any("is completed (Approve)" in t and "is now completed" in t for t in texts(response))


def test_reject_button_takes_the_other_branch(client, waiting, approver):
    instance, task = waiting
    client.force_login(approver)

    client.post(task_url(task), {"_action": "Reject", "approved": "on", "comments": "too much"})

    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["approved"] is False  # the button wins over the checkbox
    assert instance.context["paid"] == 0


def test_a_task_for_nobody_in_particular_is_refused_to_staff(client, start, bare_staff):
    # Neither assignee nor candidate groups: fail closed, staff status opens nothing.
    task = HumanTask.objects.get(instance=start("check"))
    client.force_login(bare_staff)

    page = client.get(task_url(task))
    post = client.post(task_url(task), {"_complete": "1"})

    assert page.status_code == post.status_code == 403
    assert state(task) == (TaskStatus.OPEN, WorkflowStatus.WAITING)


def test_a_step_without_form_or_actions_has_a_complete_button(client, start):
    task = HumanTask.objects.get(instance=start("check"))
    client.force_login(grant(StaffFactory(username="overrider"), "complete_any_task"))

    page = client.get(task_url(task))
    response = client.post(task_url(task), {"_complete": "1", "stray": "ignored?"})

    assert 'name="_complete"' in page.content.decode()
    assert "<fieldset" not in page.content.decode().split('id="dwf-complete-form"')[1]
    assert response.status_code == 302
    assert state(task) == (TaskStatus.COMPLETED, WorkflowStatus.COMPLETED)
    assert task.result == {}  # nothing but the form's fields reaches the context


def test_invalid_input_shows_the_errors_and_changes_nothing(client, waiting, approver):
    instance, task = waiting
    client.force_login(approver)
    events = WorkflowEvent.objects.filter(instance=instance).count()

    response = client.post(
        task_url(task), {"_action": "Approve", "comments": "x", "amount_approved": "-5"}
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "Ensure this value is greater than or equal to 0." in html
    assert "Please correct the errors below. Nothing was changed." in html
    assert 'value="-5"' in html  # the input is kept
    assert state(task) == (TaskStatus.OPEN, WorkflowStatus.WAITING)
    assert WorkflowEvent.objects.filter(instance=instance).count() == events


def test_an_unknown_action_changes_nothing(client, waiting, approver):
    _, task = waiting
    client.force_login(approver)

    response = client.post(task_url(task), {"_action": "Escalate"})

    assert response.status_code == 200
    assert "Unknown action “Escalate”." in response.content.decode()
    assert state(task) == (TaskStatus.OPEN, WorkflowStatus.WAITING)


def test_completing_a_task_someone_completed_meanwhile_shows_a_message(
    client, waiting, approver, other_manager, admin_engine
):
    _, task = waiting
    client.force_login(approver)
    client.get(task_url(task))  # the approver opens the page...
    admin_engine.complete_task(task.pk, other_manager, {}, action="Reject")  # ...someone is faster

    response = client.post(task_url(task), {"_action": "Approve"}, follow=True)

    assert response.status_code == 200
    assert texts(response) == [
        "Task “Approve the expense” was already completed by other_manager; nothing was changed."
    ]
    assert 'id="dwf-not-open"' in response.content.decode()
    assert 'id="dwf-complete-form"' not in response.content.decode()
    task.refresh_from_db()
    assert task.completed_by == other_manager
    assert task.result["approved"] is False


def test_losing_the_race_inside_the_engine_shows_a_message(
    client, waiting, approver, admin_engine, monkeypatch
):
    _, task = waiting
    client.force_login(approver)

    def completed_meanwhile(*args, **kwargs):
        raise TaskNotOpen(f"task {task.pk} has no open human task")

    monkeypatch.setattr(admin_engine, "complete_task", completed_meanwhile)
    response = client.post(task_url(task), {"_action": "Approve"}, follow=True)

    assert response.status_code == 200
    assert texts(response) == [
        f"Task “Approve the expense” cannot be completed now: task {task.pk} has no open "
        "human task. Nothing was changed."
    ]
    assert state(task) == (TaskStatus.OPEN, WorkflowStatus.WAITING)


def test_a_user_outside_the_candidate_groups_is_refused(client, waiting, bare_staff):
    _, task = waiting
    client.force_login(bare_staff)

    page = client.get(task_url(task))
    post = client.post(task_url(task), {"_action": "Approve"})

    assert page.status_code == 403
    assert "You may not complete or see task “Approve the expense”." in page.content.decode()
    assert post.status_code == 403
    assert state(task) == (TaskStatus.OPEN, WorkflowStatus.WAITING)


def test_a_viewer_sees_the_task_but_may_not_complete_it(client, waiting, accountant):
    _, task = waiting
    client.force_login(accountant)

    page = client.get(task_url(task))
    post = client.post(task_url(task), {"_action": "Approve"})

    assert page.status_code == 200
    assert 'id="dwf-not-yours"' in page.content.decode()
    assert 'id="dwf-complete-form"' not in page.content.decode()
    assert post.status_code == 403
    assert "you may not complete task" in post.content.decode()
    assert state(task) == (TaskStatus.OPEN, WorkflowStatus.WAITING)


def test_an_unknown_task_sends_back_to_the_inbox(client, approver):
    client.force_login(approver)

    response = client.get(reverse("admin:django_workflows_humantask_complete", args=[999999]))

    assert response.status_code == 302
    assert response.url == INBOX


# -- claim and unclaim ----------------------------------------------------------------------


def test_claim_and_unclaim(client, waiting, approver, other_manager):
    _, task = waiting
    client.force_login(approver)

    claimed = client.post(claim_url(task), {"next": INBOX})
    task.refresh_from_db()
    claimed_by = task.claimed_by
    client.force_login(other_manager)
    others_inbox = inbox_ids(client)
    refused = client.post(task_url(task), {"_action": "Approve"})
    client.force_login(approver)
    page = client.get(task_url(task))
    unclaimed = client.post(unclaim_url(task))
    task.refresh_from_db()

    assert claimed.status_code == 302 and claimed.url == INBOX
    assert claimed_by == approver
    assert any("You claimed task" in t for t in texts(claimed))
    assert task.pk not in others_inbox
    assert refused.status_code == 403
    assert 'name="_unclaim"' in page.content.decode()
    assert unclaimed.status_code == 302 and unclaimed.url == task_url(task)
    assert task.claimed_by is None
    assert any("is unclaimed" in t for t in texts(unclaimed))


def test_claiming_a_task_claimed_by_someone_else_is_a_message(
    client, waiting, approver, other_manager, admin_engine
):
    _, task = waiting
    admin_engine.claim_task(task.pk, other_manager)
    client.force_login(approver)

    claim = client.post(claim_url(task), follow=True)
    unclaim = client.post(unclaim_url(task))

    assert claim.status_code == 200
    assert any("is claimed by other_manager" in t for t in texts(claim))
    assert unclaim.status_code == 403
    task.refresh_from_db()
    assert task.claimed_by == other_manager


def test_claim_needs_the_task_rule_and_a_post(client, waiting, bare_staff, approver):
    _, task = waiting
    client.force_login(bare_staff)
    refused = client.post(claim_url(task))
    client.force_login(approver)
    get = client.get(claim_url(task))

    assert refused.status_code == 403
    assert get.status_code == 405
    task.refresh_from_db()
    assert task.claimed_by is None


def test_claim_of_a_closed_task_is_a_message(client, waiting, approver, admin_engine):
    _, task = waiting
    admin_engine.complete_task(task.pk, approver, {}, action="Approve")
    client.force_login(approver)

    response = client.post(claim_url(task), follow=True)

    assert response.status_code == 200
    assert any("is completed" in t for t in texts(response))


# -- the task list ----------------------------------------------------------------------------


def test_task_list_and_record_need_the_view_permission(client, waiting, approver, bare_staff):
    _, task = waiting
    HumanTask.objects.filter(pk=task.pk).update(due_at=timezone.now() - timedelta(minutes=5))
    record_url = reverse("admin:django_workflows_humantask_change", args=[task.pk])

    client.force_login(approver)
    listing = client.get(TASKS)
    record = client.get(record_url)
    client.force_login(bare_staff)
    theirs = client.get(TASKS)
    refused = client.get(record_url).status_code

    assert listing.status_code == 200
    html = listing.content.decode()
    assert "Approve the expense" in html
    assert "dwf-badge-overdue" in html
    assert f'href="{INBOX}"' in html
    assert record.status_code == 200
    assert f'href="{task_url(task)}"' in record.content.decode()
    assert theirs.status_code == 200  # the tasks of the instances they may see: none
    assert "Approve the expense" not in theirs.content.decode()
    assert refused == 403


def test_task_list_links_instances_only_for_who_may_view_them(client, waiting, managers):
    instance, _ = waiting
    from .conftest import grant

    tasks_only = grant(StaffFactory(username="tasks_only"), "view_humantask")
    client.force_login(tasks_only)

    html = client.get(TASKS).content.decode()

    instance_url = reverse("admin:django_workflows_workflowinstance_change", args=[instance.pk])
    assert f"#{str(instance.pk)[:8]}" in html
    assert instance_url not in html


def test_tasks_are_read_only(admin_client, waiting):
    _, task = waiting

    add = admin_client.get(reverse("admin:django_workflows_humantask_add"))
    change = admin_client.post(
        reverse("admin:django_workflows_humantask_change", args=[task.pk]), {"status": "completed"}
    )

    assert (add.status_code, change.status_code) == (403, 403)
    assert state(task) == (TaskStatus.OPEN, WorkflowStatus.WAITING)


def test_the_inbox_count_stops_past_the_page_and_every_page_is_reachable(
    client, start, approver, monkeypatch
):
    from django_workflows.admin import tasks as task_admin

    monkeypatch.setattr(task_admin, "INBOX_PAGE_SIZE", 2)
    monkeypatch.setattr(task_admin.BoundedPaginator, "count_limit", 1)
    made = {HumanTask.objects.get(instance=start("approval", amount=n)).pk for n in range(6)}
    client.force_login(approver)

    first = client.get(INBOX)
    seen, page = [], 1
    while True:
        response = client.get(INBOX, {"p": page})
        seen += [task.pk for task in response.context["tasks"]]
        if not response.context["page"].has_next():
            break
        page += 1

    assert "more than 3 open tasks" in first.content.decode()
    assert "page 1 of" not in first.content.decode()
    assert "6 open tasks" in response.content.decode()  # the last page counts them all
    assert page == 3 and sorted(seen) == sorted(made)
