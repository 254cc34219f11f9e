"""The admin in a real browser: Chromium driven by Playwright against the live server.

Skipped when Debian's Chromium (``/usr/bin/chromium``) is not installed.
"""

import os
from pathlib import Path

import pytest

from django_workflows import WorkflowStatus
from django_workflows.models import HumanTask, TaskStatus, WorkflowEvent, WorkflowInstance

from .conftest import grant

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path("/tmp/admin-detail.png")  # noqa: S108  (asked for at this path)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API runs an event loop in this thread; Django's ORM refuses to
    # run while one is running unless told that it is safe, which it is here (one thread).
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=ARGS
            )
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def expect():
    from playwright.sync_api import expect

    return expect


def log_in(page, expect, username):
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username.upper(), ignore_case=True)


def test_a_manager_approves_in_the_inbox_and_the_instance_completes(page, expect, approver, start):
    instance = start("approval", business_key="EXP-42", started_by=approver, amount=120)
    detail = f"/admin/django_workflows/workflowinstance/{instance.pk}/change/"
    log_in(page, expect, "approver")

    # The instance waits for the manager: the graph shows it.
    page.goto(detail)
    expect(page.locator('svg.dwf-graph g[data-step="approve"]')).to_have_attribute(
        "data-state", "current"
    )
    expect(page.locator('svg.dwf-graph g[data-step="submit"]')).to_have_attribute(
        "data-state", "completed"
    )
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.goto("/admin/django_workflows/humantask/inbox/")
    row = page.locator("tr.dwf-task", has_text="Approve the expense")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("EXP-42")
    row.get_by_role("link", name="Approve the expense").click()

    expect(page.locator("#dwf-task-context")).to_contain_text('"amount": 120')
    page.fill("textarea[name=comments]", "Receipts checked")
    page.fill("input[name=amount_approved]", "120")
    page.get_by_role("button", name="Approve").click()

    expect(page.locator(".messagelist .success")).to_contain_text("is now completed")
    expect(page.locator("#dwf-inbox-empty")).to_be_visible()
    page.goto(detail)
    expect(page.locator(".field-status_display .readonly")).to_have_text("Completed")
    expect(page.locator('svg.dwf-graph g[data-step="pay"]')).to_have_attribute(
        "data-state", "completed"
    )
    expect(page.locator('svg.dwf-graph g[data-step="reject"]')).to_have_attribute(
        "data-state", "pending"
    )
    task = HumanTask.objects.get(instance=instance)
    assert task.completed_by == approver
    assert task.result["comments"] == "Receipts checked"
    assert WorkflowInstance.objects.get(pk=instance.pk).context["paid"] == 120


def test_an_invalid_form_shows_the_error_and_the_task_stays_open(page, expect, approver, start):
    instance = start("approval", amount=80)
    task = HumanTask.objects.get(instance=instance)
    log_in(page, expect, "approver")

    page.goto(f"/admin/django_workflows/humantask/{task.pk}/complete/")
    page.fill("input[name=amount_approved]", "-5")
    page.get_by_role("button", name="Approve").click()

    expect(page.locator(".errornote")).to_contain_text("Nothing was changed")
    expect(page.locator(".field-amount_approved .errorlist")).to_have_text(
        "Ensure this value is greater than or equal to 0."
    )
    expect(page.locator("input[name=amount_approved]")).to_have_value("-5")
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN
    assert WorkflowInstance.objects.get(pk=instance.pk).status == WorkflowStatus.WAITING


def test_an_operator_cancels_an_instance_with_a_reason(page, expect, approver, start):
    grant(approver, "change_workflowinstance")
    instance = start("approval", business_key="EXP-9", amount=10)
    log_in(page, expect, "approver")

    page.goto(f"/admin/django_workflows/workflowinstance/{instance.pk}/change/")
    page.get_by_role("link", name="Cancel instance").click()
    expect(page.locator("textarea[name=reason]")).to_be_visible()
    page.fill("textarea[name=reason]", "Submitted twice")
    page.get_by_role("button", name="Cancel the workflow").click()

    expect(page.locator(".messagelist .success")).to_contain_text("was canceled")
    expect(page.locator(".field-status_display .readonly")).to_have_text("Canceled")
    expect(page.get_by_role("link", name="Cancel instance")).to_have_count(0)
    event = WorkflowEvent.objects.get(instance=instance, type="WorkflowCanceled")
    assert event.payload["reason"] == "Submitted twice"
