"""Bulk approval and comments in a real browser (Chromium, as in test_browser.py)."""

import pytest

from django_workflows.models import Comment, HumanTask, TaskStatus

from . import workflows
from .test_browser import CHROMIUM, browser, expect, log_in, page  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def test_a_manager_rejects_two_tasks_at_once_with_a_comment(
    page,  # noqa: F811
    expect,  # noqa: F811
    approver,
    start,
    monkeypatch,
):
    monkeypatch.setattr(workflows.Approve, "comment_required", ("Reject",), raising=False)
    instances = [start("approval", business_key=f"EXP-{n}", amount=n) for n in (1, 2, 3)]
    tasks = [HumanTask.objects.get(instance=i, step_name="approve") for i in instances]
    log_in(page, expect, "approver")

    page.goto("/admin/django_workflows/humantask/inbox/")
    for task in tasks[:2]:
        page.locator(f'tr[data-task="{task.pk}"] input[type=checkbox]').check()
    page.click("#dwf-bulk-button")

    expect(page.locator("#dwf-bulk-tasks tbody tr")).to_have_count(2)
    expect(page.locator("label[for=dwf-comment]")).to_contain_text("required to Reject")
    page.on("dialog", lambda dialog: dialog.accept())  # Reject asks first
    page.get_by_role("button", name="Reject").click()  # no comment: refused, nothing done
    expect(page.locator(".errorlist")).to_contain_text("a comment is required to Reject")
    assert not HumanTask.objects.filter(status=TaskStatus.COMPLETED).exists()

    page.fill("#dwf-comment", "Not in this budget")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".messagelist .success")).to_contain_text("2 tasks completed")
    expect(page.locator("tr.dwf-task")).to_have_count(1)
    assert sorted(
        HumanTask.objects.filter(status=TaskStatus.COMPLETED).values_list("pk", flat=True)
    ) == sorted(task.pk for task in tasks[:2])
    assert Comment.objects.filter(text="Not in this budget").count() == 2

    # The comment shows on the instance page; another one is added there.
    page.goto(f"/admin/django_workflows/workflowinstance/{instances[0].pk}/change/")
    expect(page.locator("#dwf-comments tr.dwf-comment")).to_contain_text("Not in this budget")
    page.fill("#dwf-comment-text", "Told the employee")
    page.get_by_role("button", name="Add comment").click()
    expect(page.locator(".messagelist .success")).to_contain_text("comment was added")
    expect(page.locator("#dwf-comments tr.dwf-comment")).to_have_count(2)
    expect(page.locator("#dwf-history")).to_contain_text("CommentAdded")
