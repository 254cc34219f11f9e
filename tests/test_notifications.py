"""Email about human tasks (NOTIFY_BY_EMAIL): who, when, after commit only, never failing
the transition."""

from datetime import timedelta

import pytest
from django.core.checks import run_checks
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction
from django.test import override_settings

from django_workflows import BaseHumanStep, WorkflowDefinition, WorkflowStatus
from django_workflows.models import HumanTask
from django_workflows.testing import advance_time

from .factories import GroupFactory, UserFactory

pytestmark = pytest.mark.django_db

ON = {"NOTIFY_BY_EMAIL": True, "SITE_URL": "https://example.com"}


class Approve(BaseHumanStep):
    title = "Approve the expense"
    summary = "{employee}: {amount} EUR"
    fields = ("ok",)
    candidate_groups = ("managers",)
    remind_every = timedelta(hours=8)
    escalate_after = timedelta(hours=20)
    escalate_to = ("directors",)

    def get_assignee(self, context):
        return context.get("approver")


class FailingBackend(BaseEmailBackend):
    def send_messages(self, messages):
        raise ConnectionRefusedError("the mail server is down")


@pytest.fixture
def notify(engine, settings, django_capture_on_commit_callbacks):
    """The engine with an ``approve`` workflow, mails on; ``committed`` (a context
    manager) runs what the transitions inside it do after commit, as a commit would."""
    settings.DJANGO_WORKFLOWS = {**settings.DJANGO_WORKFLOWS, **ON}
    engine.registry.register_definition(
        WorkflowDefinition(name="approve", version="1", initial_step="a", steps={"a": Approve()})
    )
    engine.committed = lambda: django_capture_on_commit_callbacks(execute=True)
    return engine


def start(engine, **data):
    data = {"employee": "Ann", "amount": 120, **data}
    with engine.committed():
        return engine.start_workflow("approve", initial_data=data).human_tasks.get()


def later(engine, delta):
    with engine.committed():
        advance_time(delta, engine)


def test_a_new_task_mails_its_assignee_with_a_link(notify, mailoutbox):
    approver = UserFactory(email="boss@example.com", first_name="Bea")
    task = start(notify, approver=approver.pk)
    (mail,) = mailoutbox
    assert mail.to == ["boss@example.com"]
    assert mail.subject == "New task: Approve the expense (Ann: 120 EUR)"
    assert "Hello Bea," in mail.body
    link = f"https://example.com/workflows/tasks/{task.pk}/"  # the app's own page
    assert link in mail.body


def test_without_an_assignee_the_groups_active_members_with_an_address(notify, mailoutbox):
    managers = GroupFactory(name="managers")
    one = UserFactory(groups=[managers])
    two = UserFactory(groups=[managers])
    UserFactory(groups=[managers], email="")  # no address
    UserFactory(groups=[managers], is_active=False)
    UserFactory()  # not a manager
    start(notify)
    assert sorted(m.to[0] for m in mailoutbox) == sorted([one.email, two.email])
    assert "waiting for you or your group" in mailoutbox[0].body


def test_the_substitutes_standing_in_now_are_mailed_too(notify, mailoutbox):
    from django.utils import timezone

    from django_workflows.substitutes import add_substitute

    absent = UserFactory(email="ann@example.com")
    deputy = UserFactory(email="deputy@example.com")
    former = UserFactory(email="former@example.com")
    now = timezone.now()
    add_substitute(absent, deputy, now - timedelta(days=1), now + timedelta(days=1))
    add_substitute(absent, former, now - timedelta(days=9), now - timedelta(days=2))
    start(notify, approver=absent.pk)
    assert [m.to for m in mailoutbox] == [["ann@example.com"], ["deputy@example.com"]]


def test_nothing_is_sent_when_the_setting_is_off(notify, settings, mailoutbox):
    settings.DJANGO_WORKFLOWS = {**settings.DJANGO_WORKFLOWS, "NOTIFY_BY_EMAIL": False}
    start(notify, approver=UserFactory().pk)
    assert mailoutbox == []


def test_the_default_is_off(settings):
    from django_workflows.conf import DEFAULTS

    assert DEFAULTS["NOTIFY_BY_EMAIL"] is False


def test_nothing_is_sent_when_the_transaction_rolls_back(notify, mailoutbox):
    approver = UserFactory()

    def start_then_fail():
        with transaction.atomic():
            notify.start_workflow("approve", initial_data={"approver": approver.pk})
            raise RuntimeError("the caller's transaction fails")

    with notify.committed(), pytest.raises(RuntimeError):
        start_then_fail()
    assert HumanTask.objects.count() == 0
    assert mailoutbox == []


def test_reassigning_mails_the_new_assignee(notify, mailoutbox):
    first, second = UserFactory(), UserFactory()
    task = start(notify, approver=first.pk)
    with notify.committed():
        notify.reassign_task(task.pk, second, by=first, reason="on leave")
    assert [m.to for m in mailoutbox] == [[first.email], [second.email]]
    assert mailoutbox[1].subject.startswith("Task handed to you: Approve the expense")
    assert '("on leave")' in mailoutbox[1].body


def test_reminders_and_the_escalation_are_mailed(notify, mailoutbox):
    approver = UserFactory()
    director = UserFactory(groups=[GroupFactory(name="directors")])
    start(notify, approver=approver.pk)
    later(notify, timedelta(hours=8, minutes=1))
    assert mailoutbox[-1].to == [approver.email]
    assert mailoutbox[-1].subject.startswith("Reminder: Approve the expense")
    assert "(reminder 1)" in mailoutbox[-1].body

    later(notify, timedelta(hours=12))
    assert mailoutbox[-1].to == [director.email]
    assert mailoutbox[-1].subject.startswith("Escalated to you: Approve the expense")
    assert "escalated to your group (directors)" in mailoutbox[-1].body
    assert len(mailoutbox) == 3


def test_a_failing_mail_backend_fails_no_transition(notify, settings, mailoutbox, caplog):
    settings.EMAIL_BACKEND = "tests.test_notifications.FailingBackend"
    approver = UserFactory()
    UserFactory(groups=[GroupFactory(name="directors")])
    task = start(notify, approver=approver.pk)
    later(notify, timedelta(hours=21))  # the escalation goes through
    task.refresh_from_db()
    assert task.escalated_at is not None
    with notify.committed():
        instance = notify.complete_task(task.pk, approver.pk, {"ok": True})
    assert instance.status == WorkflowStatus.COMPLETED
    assert "could not mail task_created about human task" in caplog.text
    assert "could not mail task_escalated" in caplog.text
    assert "the mail server is down" in caplog.text


@override_settings(ROOT_URLCONF="tests.urls_task_page")
def test_without_the_apps_pages_the_link_is_the_admins_task_page(notify, mailoutbox):
    task = start(notify, approver=UserFactory().pk)
    body = mailoutbox[0].body
    assert f"https://example.com/admin/django_workflows/humantask/{task.pk}/complete/" in body
    assert "/workflows/tasks/" not in body


def test_the_templates_are_overridable(notify, settings, tmp_path, mailoutbox):
    folder = tmp_path / "django_workflows" / "email"
    folder.mkdir(parents=True)
    (folder / "task_created_subject.txt").write_text("To do:\n{{ task.summary }}\n")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    start(notify, approver=UserFactory().pk)
    assert mailoutbox[0].subject == "To do: Ann: 120 EUR"  # one line


@pytest.mark.parametrize(
    ("value", "check_id"),
    [
        ({"SITE_URL": "example.com"}, "django_workflows.E003"),
        ({"NOTIFY_BY_EMAIL": True}, "django_workflows.W001"),
    ],
)
def test_checks_report_a_site_url_that_cannot_make_links(value, check_id):
    with override_settings(DJANGO_WORKFLOWS=value):
        found = [m for m in run_checks() if m.id == check_id]
    assert len(found) == 1 and "SITE_URL" in found[0].msg
    with override_settings(DJANGO_WORKFLOWS=ON):
        assert not [m for m in run_checks() if m.id.startswith("django_workflows.")]
