"""The app's own pages in a real browser: a non-staff employee logs in, finds the task
in the inbox by its summary, reads the display table, rejects (a danger button: the
browser asks first) and approves, and reassigns; the admin's Reject asks the same.

``UPDATE_SCREENSHOTS=1`` also takes the docs' screenshots of the app's inbox and task
page (``docs/_static/screenshots/app-*.png``, shown in ``docs/howto/app-inbox.md``).
"""

import os

import pytest

from django_workflows.models import HumanTask, TaskStatus

from ..admin.test_browser import CHROMIUM, browser, expect, page  # noqa: F401  (fixtures)
from ..admin.test_screenshots import SCREENSHOTS, save_small

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def log_in(page, expect, username):  # noqa: F811
    """Through the login page the app's login_required sends to."""
    page.goto("/workflows/")
    expect(page.locator("#login-form")).to_be_visible()
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("My tasks")
    assert page.url.endswith("/workflows/")


class Dialogs:
    """Answers every confirm() of ``page`` with ``accept``; ``asked``: their messages."""

    def __init__(self, page, accept):  # noqa: F811
        self.accept = accept
        self.asked = []
        page.on("dialog", self.answer)

    def answer(self, dialog):
        self.asked.append(dialog.message)
        if self.accept:
            dialog.accept()
        else:
            dialog.dismiss()


def test_an_employee_rejects_approves_and_reassigns(page, expect, leave, employee, colleague):  # noqa: F811
    first = leave(employee="Ada", days=3)
    second = leave(employee="Bob", days=5)
    third = leave(employee="Cy", days=1)
    assert not employee.is_staff
    log_in(page, expect, "erin")

    row = page.locator(f'tr.dwf-task[data-task="{first.pk}"]')
    expect(row.locator(".dwf-summary")).to_have_text("Ada: 3 days from 2026-12-21")
    expect(page.locator("tr.dwf-task")).to_have_count(3)
    row.get_by_role("link", name="Approve the leave").click()
    facts = page.locator("#dwf-task-facts table.dwf-display")
    expect(facts.locator("tr", has_text="Employee")).to_contain_text("Ada")
    expect(facts.locator("tr", has_text="Days")).to_contain_text("3")
    expect(page.locator("#dwf-task-raw")).not_to_have_attribute("open", "")

    # Reject is a danger button: the browser asks; "Cancel" submits nothing.
    dialogs = Dialogs(page, accept=False)
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#dwf-complete-form")).to_be_visible()
    assert dialogs.asked == ["Reject: are you sure?"]
    assert HumanTask.objects.get(pk=first.pk).status == TaskStatus.OPEN

    # Approve is not: no question, the task is done and the inbox says so.
    page.fill("textarea[name=comments]", "Enjoy")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator(".messagelist .success")).to_contain_text("is completed (Approve)")
    assert dialogs.asked == ["Reject: are you sure?"]
    assert HumanTask.objects.get(pk=first.pk).result["approved"] is True

    # Reject, confirmed this time.
    page.goto(f"/workflows/tasks/{second.pk}/")
    dialogs.accept = True
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".messagelist .success")).to_contain_text("is completed (Reject)")
    assert dialogs.asked == ["Reject: are you sure?"] * 2
    assert HumanTask.objects.get(pk=second.pk).result["approved"] is False

    # Claim, then hand the task to a colleague: back to the inbox, without it.
    page.goto(f"/workflows/tasks/{third.pk}/")
    page.get_by_role("button", name="Claim").click()
    expect(page.locator(".messagelist .success")).to_contain_text("You claimed task")
    page.locator("#dwf-reassign > summary").click()
    page.fill("#dwf-reassign-form input[name=username]", "nobody")
    page.locator("#dwf-reassign-form").get_by_role("button", name="Reassign").click()
    expect(page.locator("#dwf-reassign-form .errorlist")).to_contain_text("no user “nobody”")
    page.fill("#dwf-reassign-form input[name=username]", "carl")
    page.fill("#dwf-reassign-form textarea[name=reason]", "Carl knows Cy")
    page.locator("#dwf-reassign-form").get_by_role("button", name="Reassign").click()
    expect(page.locator(".messagelist .success")).to_contain_text("is reassigned to carl")
    expect(page.locator("#dwf-inbox-empty")).to_be_visible()
    assert HumanTask.objects.get(pk=third.pk).assignee == colleague


def test_the_admin_reject_button_asks_first(page, expect, start, approver):  # noqa: F811
    task = start("approval", amount=30).human_tasks.get()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "approver")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_be_visible()
    page.goto(f"/admin/django_workflows/humantask/{task.pk}/complete/")

    dialogs = Dialogs(page, accept=True)
    page.get_by_role("button", name="Reject").click()

    expect(page.locator(".messagelist .success")).to_contain_text("is completed (Reject)")
    assert dialogs.asked == ["Reject: are you sure?"]
    assert HumanTask.objects.get(pk=task.pk).result["approved"] is False


@pytest.mark.skipif(
    os.environ.get("UPDATE_SCREENSHOTS") != "1", reason="set UPDATE_SCREENSHOTS=1 to retake them"
)
def test_update_app_screenshots(page, expect, leave, employee):  # noqa: F811
    task = leave(employee="Ada Lovelace", days=3)
    leave(employee="Grace Hopper", days=10)
    log_in(page, expect, "erin")
    save_small(page, SCREENSHOTS / "app-inbox.png")
    page.goto(f"/workflows/tasks/{task.pk}/")
    page.fill("textarea[name=comments]", "Enjoy the holiday")
    save_small(page, SCREENSHOTS / "app-task.png")
