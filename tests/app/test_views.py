"""The app's own inbox and task page (``django_workflows.urls``), with Django's test
client: login required, the task rule of ``permissions.py``, staff status granting
nothing, CSRF, the danger buttons and reassignment; the admin's reassign form too."""

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_workflows import BaseHumanStep, WorkflowDefinition
from django_workflows.exceptions import DefinitionError
from django_workflows.models import HumanTask, TaskStatus, WorkflowEvent

pytestmark = pytest.mark.django_db

INBOX = "/workflows/"


def task_url(task):
    return reverse("django_workflows:task", args=[task.pk])


def test_the_urls_are_the_documented_ones():
    assert reverse("django_workflows:inbox") == INBOX
    assert reverse("django_workflows:task", args=[7]) == "/workflows/tasks/7/"
    assert reverse("django_workflows:reassign", args=[7]) == "/workflows/tasks/7/reassign/"


def test_every_page_needs_a_login(client, leave):
    task = leave()
    for url in (INBOX, task_url(task)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next={url}"
    response = client.post(reverse("django_workflows:claim", args=[task.pk]))
    assert response.status_code == 302
    assert HumanTask.objects.get(pk=task.pk).claimed_by is None


def test_the_login_page_leads_to_the_inbox(client, employee):
    page = client.get(f"/accounts/login/?next={INBOX}")
    assert page.status_code == 200
    assert 'id="login-form"' in page.content.decode()
    response = client.post(
        "/accounts/login/", {"username": "erin", "password": "pw", "next": INBOX}
    )
    assert response.status_code == 302
    assert response["Location"] == INBOX


def test_the_inbox_shows_the_employees_tasks_with_their_summary(client, leave, employee, start):
    mine = leave(employee="Ada", days=3)
    late = leave(employee="Bob", days=1)
    HumanTask.objects.filter(pk=late.pk).update(due_at=timezone.now() - timezone.timedelta(hours=1))
    start("check")  # a task for nobody in particular: not in anyone's inbox
    client.force_login(employee)

    response = client.get(INBOX)

    html = response.content.decode()
    assert response.status_code == 200
    assert f'data-task="{mine.pk}"' in html
    assert '<td class="dwf-summary">Ada: 3 days from 2026-12-21</td>' in html
    assert f'<a href="{task_url(mine)}">Approve the leave</a>' in html
    # Due first, and the overdue one highlighted.
    assert html.index(f'data-task="{late.pk}"') < html.index(f'data-task="{mine.pk}"')
    assert 'class="dwf-task dwf-overdue"' in html
    assert "Check the documents" not in html
    assert "/admin/" not in html.split("<body", 1)[1].replace("/static/admin/", "")
    assert "Welcome, <strong>Erin</strong>." in html


def test_staff_status_grants_nothing(client, leave, outsider):
    task = leave()
    client.force_login(outsider)
    assert f'data-task="{task.pk}"' not in client.get(INBOX).content.decode()
    assert client.get(task_url(task)).status_code == 404
    assert client.post(task_url(task), {"_action": "Approve"}).status_code == 404
    assert client.post(reverse("django_workflows:claim", args=[task.pk])).status_code == 404
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_a_task_one_may_not_see_is_a_404_like_no_task(client, leave, outsider):
    task = leave()
    client.force_login(outsider)
    hidden = client.get(task_url(task))
    missing = client.get(reverse("django_workflows:task", args=[task.pk + 1000]))
    assert hidden.status_code == missing.status_code == 404


def test_the_task_page_shows_the_display_table_the_form_and_styled_buttons(client, leave, employee):
    task = leave(employee="<b>Ada</b>")
    client.force_login(employee)

    html = client.get(task_url(task)).content.decode()

    assert '<tr><th scope="row">Employee</th><td>&lt;b&gt;Ada&lt;/b&gt;</td></tr>' in html
    assert html.index('id="dwf-task-facts"') < html.index('id="dwf-complete-form"')
    assert '<details id="dwf-task-raw">' in html  # the raw context, collapsed
    assert 'name="comments"' in html
    assert (
        '<button type="submit" name="_action" value="Approve" class="button default" '
        'data-kind="primary">' in html
    )
    assert 'value="Reject" class="button dwf-danger" data-kind="danger"' in html
    assert (
        'data-confirm="Reject: are you sure?" onclick="return confirm(this.dataset.confirm)"'
        in (html)
    )
    assert 'href="/static/admin/css/base.css"' in html


def test_approve_completes_the_task_and_goes_back_to_the_inbox(client, leave, employee):
    task = leave()
    client.force_login(employee)

    response = client.post(task_url(task), {"_action": "Approve", "comments": "Enjoy"}, follow=True)

    assert response.redirect_chain == [(INBOX, 302)]
    html = response.content.decode()
    assert "Task “Approve the leave” is completed (Approve). leave 1 #" in html
    assert "/admin/" not in html.split('class="messagelist"', 1)[1].split("</ul>", 1)[0]
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    assert task.completed_by == employee
    assert task.instance.context == {**task.instance.context, "approved": True, "comments": "Enjoy"}


def test_reject_sets_the_actions_values(client, leave, employee):
    task = leave()
    client.force_login(employee)
    client.post(task_url(task), {"_action": "Reject"})
    task.refresh_from_db()
    assert task.result["approved"] is False


def test_a_visible_task_for_someone_else_is_read_only(client, leave, admin_engine, managers):
    from ..factories import UserFactory

    starter = UserFactory(username="starter")  # sees the instance they started
    instance = admin_engine.start_workflow(
        "leave", initial_data={"employee": "Ada", "days": 1}, started_by=starter
    )
    task = instance.human_tasks.get()
    client.force_login(starter)

    page = client.get(task_url(task))
    refused = client.post(task_url(task), {"_action": "Approve"})

    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="dwf-not-yours"' in html
    assert 'id="dwf-complete-form"' not in html
    assert 'id="dwf-reassign-form"' not in html
    assert refused.status_code == 403
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_posts_need_the_csrf_token(leave, employee):
    task = leave()
    client = Client(enforce_csrf_checks=True)
    client.force_login(employee)
    assert client.post(task_url(task), {"_action": "Approve"}).status_code == 403
    assert client.post(reverse("django_workflows:claim", args=[task.pk])).status_code == 403
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_a_completed_task_says_so_and_a_late_post_changes_nothing(client, leave, employee):
    task = leave()
    client.force_login(employee)
    client.post(task_url(task), {"_action": "Approve"})

    page = client.get(task_url(task)).content.decode()
    late = client.post(task_url(task), {"_action": "Reject"}, follow=True)

    assert 'id="dwf-not-open"' in page
    assert late.redirect_chain == [(task_url(task), 302)]
    assert "was already completed by erin" in late.content.decode()
    assert HumanTask.objects.get(pk=task.pk).result["approved"] is True


def test_claim_and_unclaim(client, leave, employee, colleague):
    task = leave()
    client.force_login(employee)
    assert client.get(reverse("django_workflows:claim", args=[task.pk])).status_code == 405

    claimed = client.post(reverse("django_workflows:claim", args=[task.pk]), follow=True)
    assert claimed.redirect_chain == [(task_url(task), 302)]
    assert "You claimed task" in claimed.content.decode()
    assert HumanTask.objects.get(pk=task.pk).claimed_by == employee

    client.force_login(colleague)  # no longer theirs to claim: read-only, not in the inbox
    assert f'data-task="{task.pk}"' not in client.get(INBOX).content.decode()
    assert 'id="dwf-not-yours"' in client.get(task_url(task)).content.decode()

    client.force_login(employee)
    client.post(reverse("django_workflows:unclaim", args=[task.pk]))
    assert HumanTask.objects.get(pk=task.pk).claimed_by is None


def test_reassigning_away_goes_to_the_inbox_with_a_message(client, leave, employee, colleague):
    task = leave()
    client.force_login(employee)
    assert 'id="dwf-reassign-form"' not in client.get(task_url(task)).content.decode()
    client.post(reverse("django_workflows:claim", args=[task.pk]))
    assert 'id="dwf-reassign-form"' in client.get(task_url(task)).content.decode()

    response = client.post(
        reverse("django_workflows:reassign", args=[task.pk]),
        {"username": "carl", "reason": "on holiday"},
        follow=True,
    )

    assert response.redirect_chain == [(INBOX, 302)]
    assert "Task “Approve the leave” is reassigned to carl." in response.content.decode()
    task.refresh_from_db()
    assert (task.assignee, task.claimed_by) == (colleague, None)
    event = WorkflowEvent.objects.get(type="HumanTaskReassigned")
    assert event.payload["reason"] == "on holiday"


def test_reassigning_to_groups_one_is_in_stays_on_the_task(client, leave, employee):
    task = leave()
    client.force_login(employee)
    client.post(reverse("django_workflows:claim", args=[task.pk]))

    response = client.post(
        reverse("django_workflows:reassign", args=[task.pk]), {"groups": "managers, hr"}
    )

    assert response["Location"] == task_url(task)
    task.refresh_from_db()
    assert sorted(g.name for g in task.candidate_groups.all()) == ["hr", "managers"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"username": "nobody"}, "There is no user “nobody”."),
        ({}, "Give either a user or groups."),
        ({"username": "carl", "groups": "hr"}, "Give either a user or groups."),
        ({"username": "carl", "reason": "x" * 1001}, "at most 1000 characters"),
    ],
)
def test_a_bad_reassignment_shows_the_error_and_changes_nothing(
    client, leave, employee, colleague, data, error
):
    task = leave()
    client.force_login(employee)
    client.post(reverse("django_workflows:claim", args=[task.pk]))

    response = client.post(reverse("django_workflows:reassign", args=[task.pk]), data)

    html = response.content.decode()
    assert response.status_code == 200
    assert error in html
    assert '<details class="dwf-reassign" id="dwf-reassign" open>' in html
    task.refresh_from_db()
    assert (task.assignee, task.claimed_by) == (None, employee)


def test_reassigning_needs_the_rule(client, leave, employee):
    task = leave()
    client.force_login(employee)  # a candidate, neither assignee nor claimer
    response = client.post(
        reverse("django_workflows:reassign", args=[task.pk]), {"username": "erin"}
    )
    assert response.status_code == 403
    assert HumanTask.objects.get(pk=task.pk).assignee is None
    assert client.get(reverse("django_workflows:reassign", args=[task.pk])).status_code == 405


def test_the_admin_task_page_has_the_reassign_form_and_the_danger_button(
    client, start, approver, other_manager
):
    instance = start("approval", amount=10)
    task = instance.human_tasks.get()
    url = reverse("admin:django_workflows_humantask_complete", args=[task.pk])
    reassign = reverse("admin:django_workflows_humantask_reassign", args=[task.pk])
    client.force_login(approver)
    client.post(reverse("admin:django_workflows_humantask_claim", args=[task.pk]))

    html = client.get(url).content.decode()
    bad = client.post(reassign, {"username": "nobody"})
    done = client.post(reassign, {"username": "other_manager"}, follow=True)

    assert f'action="{reassign}"' in html
    assert 'data-confirm="Reject: are you sure?"' in html
    assert "There is no user “nobody”." in bad.content.decode()
    assert done.redirect_chain == [(reverse("admin:django_workflows_humantask_inbox"), 302)]
    assert "is reassigned to other_manager" in done.content.decode()
    assert HumanTask.objects.get(pk=task.pk).assignee == other_manager


@pytest.mark.parametrize(
    ("kinds", "message"),
    [({"Reject": "red"}, "action_kinds"), ({"Delete": "danger"}, "action_kinds")],
)
def test_action_kinds_name_actions_and_known_kinds(kinds, message):
    step = BaseHumanStep(actions={"Approve": {}, "Reject": {}}, action_kinds=kinds)
    with pytest.raises(DefinitionError, match=message):
        WorkflowDefinition(name="w", version="1", initial_step="a", steps={"a": step}).validate()


def test_without_action_kinds_the_first_action_is_primary():
    step = BaseHumanStep(actions={"Approve": {}, "Reject": {}})
    assert step.get_action_kinds() == [("Approve", "primary"), ("Reject", "default")]


def test_reassign_any_task_lets_a_dispatcher_hand_on_any_task(client, leave, colleague):
    from ..admin.conftest import grant
    from ..factories import UserFactory

    dispatcher = grant(UserFactory(username="dispatcher"), "reassign_any_task")
    task = leave()
    client.force_login(dispatcher)

    page = client.get(task_url(task)).content.decode()
    response = client.post(
        reverse("django_workflows:reassign", args=[task.pk]), {"username": "carl"}
    )

    assert 'id="dwf-not-yours"' in page  # may not complete it, may reassign it
    assert 'id="dwf-reassign-form"' in page
    assert response["Location"] == INBOX
    assert HumanTask.objects.get(pk=task.pk).assignee == colleague


def test_the_task_page_stores_a_comment_and_the_inbox_has_no_bulk_selection(
    client, leave, employee
):
    task = leave()
    client.force_login(employee)
    assert 'name="_comment"' in client.get(task_url(task)).content.decode()
    assert 'id="dwf-bulk-select"' not in client.get(INBOX).content.decode()  # the admin's

    client.post(task_url(task), {"_action": "Reject", "_comment": "Team offsite that week"})

    comment = task.comments.get()
    assert (comment.author, comment.text) == (employee, "Team offsite that week")
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.COMPLETED


def test_a_refused_reassignment_is_a_403_whatever_the_input(client, leave, employee):
    """The form's errors are shown only to who may reassign: bad input from anyone else
    re-rendered the page with no word of what happened."""
    task = leave()
    client.force_login(employee)  # a candidate, neither assignee nor claimer
    url = reverse("django_workflows:reassign", args=[task.pk])
    for data in ({"username": "x" * 500}, {"username": "erin\x00"}, {}):
        assert client.post(url, data).status_code == 403
    assert HumanTask.objects.get(pk=task.pk).assignee is None


def test_reassigning_a_closed_task_says_so(client, leave, employee, admin_engine):
    task = leave()
    admin_engine.complete_task(task.pk, employee, {}, action="Approve")
    client.force_login(employee)
    url = reverse("django_workflows:reassign", args=[task.pk])
    response = client.post(url, {"username": "x" * 500}, follow=True)
    assert "already completed by erin; nothing was changed" in response.content.decode()


def test_login_without_next_and_logout_stay_in_the_apps_pages(client, employee):
    """A login page opened without ``?next=`` went on to LOGIN_REDIRECT_URL, Django's
    /accounts/profile/ (a 404); the Log out button ended on the admin's "Log in again",
    a login that refuses who is not staff."""
    page = client.get("/accounts/login/").content.decode()
    assert f'name="next" value="{INBOX}"' in page
    response = client.post(
        "/accounts/login/", {"username": "erin", "password": "pw", "next": INBOX}
    )
    assert response["Location"] == INBOX  # what the page's form sends
    form = re.search(r'<form id="logout-form".*?</form>', client.get(INBOX).content.decode(), re.S)
    assert f'name="next" value="{INBOX}"' in form.group(0)
    response = client.post(form.group(0).split('action="')[1].split('"')[0], {"next": INBOX})
    assert response.status_code == 302 and response["Location"] == INBOX
    assert client.get(INBOX)["Location"] == f"/accounts/login/?next={INBOX}"
