"""The admin screens of the approvals issue in a real browser (Chromium, as in
test_browser.py), one realistic scenario each: "My tasks (N)", the inbox and bulk
approval, the task page (display table, raw context, danger button, comment, reassign),
substitutes and the history's "on behalf of", comments, an N-of-M step.

``UPDATE_SCREENSHOTS=1`` also takes their screenshots for the docs
(``docs/_static/screenshots/admin-*.png``, listed in test_screenshots.USED_BY).
"""

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from django_workflows import BaseHumanStep, WorkflowDefinition, WorkflowStatus
from django_workflows.models import Comment, HumanTask, Substitution, TaskStatus, WorkflowInstance

from ..factories import StaffFactory
from .conftest import grant
from .test_browser import ARGS, CHROMIUM, browser, expect  # noqa: F401  (fixtures)
from .test_screenshots import SCREENSHOTS, WIDTH, save_small

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def purchase_order() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="purchase_order",
        version="1",
        initial_step="approve",
        steps={
            "approve": BaseHumanStep(
                title="Approve the purchase",
                candidate_groups=("managers",),
                actions={"Approve": {"approved": True}, "Reject": {"approved": False}},
                action_kinds={"Reject": "danger"},
                comment_required=("Reject",),
                due_in=timedelta(days=3),
                summary="{requester}: {item}, {amount} EUR",
                display_fields={
                    "requester": "Requested by",
                    "item": "Item",
                    "supplier": "Supplier",
                    "amount": "Amount (EUR)",
                },
            )
        },
    )


ORDERS = [
    ("PO-2026-0141", "Ada Lovelace", "Standing desk", "Fabrikat GmbH", 640),
    ("PO-2026-0142", "Grace Hopper", "27-inch monitor", "Screenline", 310),
    ("PO-2026-0143", "Alan Turing", "Laptop dock", "Screenline", 189),
]


@pytest.fixture
def page(browser, live_server):  # noqa: F811
    """A 1280x800 page, the size of the docs' screenshots."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": WIDTH, "height": 800}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def orders(admin_engine):
    """Three purchase orders waiting for the managers; their tasks, in order."""
    admin_engine.registry.register_definition(purchase_order())
    tasks = []
    for key, requester, item, supplier, amount in ORDERS:
        instance = admin_engine.start_workflow(
            "purchase_order",
            initial_data={
                "requester": requester,
                "item": item,
                "supplier": supplier,
                "amount": amount,
            },
            business_key=key,
        )
        tasks.append(HumanTask.objects.get(instance=instance))
    # Ada's order has waited too long: its due date passed yesterday.
    HumanTask.objects.filter(pk=tasks[0].pk).update(due_at=timezone.now() - timedelta(days=1))
    return tasks


def shoot(page, name):
    """Saves the docs' screenshot ``name`` when retaking them (UPDATE_SCREENSHOTS=1)."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        # The sidebar is sticky: in a full-page picture it would float mid-page.
        page.add_style_tag(content="#nav-sidebar {position: static; max-height: none}")
        save_small(page, SCREENSHOTS / name)


def log_in(page, expect, username):  # noqa: F811
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username.upper(), ignore_case=True)


def accept_dialogs(page):
    """Accepts every confirm(); returns the list of their messages."""
    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    return asked


def test_my_tasks_count_leads_to_the_inbox_and_two_orders_are_approved_at_once(
    page,
    expect,  # noqa: F811
    approver,
    orders,
):
    log_in(page, expect, "approver")

    # The index: "My tasks (3)" in the app's list, a link to the inbox.
    my_tasks = page.locator("#content-main .model-mytask")
    expect(my_tasks).to_contain_text("My tasks (3)")
    shoot(page, "admin-index.png")
    my_tasks.get_by_role("link", name="My tasks (3)").click()

    # The inbox: one row per order, told apart by its summary.
    rows = page.locator("tr.dwf-task")
    expect(rows).to_have_count(3)
    expect(page.locator(f'tr[data-task="{orders[0].pk}"] .dwf-summary')).to_have_text(
        "Ada Lovelace: Standing desk, 640 EUR"
    )
    expect(page.locator(f'tr[data-task="{orders[1].pk}"]')).to_contain_text("PO-2026-0142")
    late = page.locator("tr.dwf-overdue")  # the overdue order is marked, and first
    expect(late).to_have_count(1)
    expect(late.locator(".dwf-badge-overdue")).to_have_text("overdue")
    expect(rows.first).to_have_attribute("data-task", str(orders[0].pk))
    # The sidebar says the same, and marks where the user is.
    expect(page.locator("#nav-sidebar .model-mytask")).to_contain_text("My tasks (3)")
    for task in orders[1:]:
        page.locator(f'tr[data-task="{task.pk}"] input[type=checkbox]').check()
    shoot(page, "admin-inbox.png")
    page.click("#dwf-bulk-button")

    # The bulk page: the two orders, one form, the comment, the styled actions.
    expect(page.locator("#dwf-bulk-tasks tbody tr")).to_have_count(2)
    expect(page.locator("#dwf-bulk-tasks")).to_contain_text(
        "Grace Hopper: 27-inch monitor, 310 EUR"
    )
    expect(page.locator("#dwf-bulk-tasks")).not_to_contain_text("Ada Lovelace")
    expect(page.locator("label[for=dwf-comment]")).to_contain_text("required to Reject")
    reject = page.get_by_role("button", name="Reject")
    expect(reject).to_have_attribute("data-kind", "danger")
    expect(reject).to_have_class("button dwf-danger")
    page.fill("#dwf-comment", "Both from the framework contract with Screenline")
    shoot(page, "admin-bulk.png")
    page.get_by_role("button", name="Approve").click()

    expect(page.locator(".messagelist .success")).to_contain_text("2 tasks completed")
    expect(rows).to_have_count(1)
    expect(page.locator("#nav-sidebar .model-mytask")).to_contain_text("My tasks (1)")
    page.goto("/admin/django_workflows/")  # the app's index page says it too
    expect(page.locator("#content-main .model-mytask")).to_contain_text("My tasks (1)")
    done = HumanTask.objects.filter(status=TaskStatus.COMPLETED)
    assert sorted(done.values_list("pk", flat=True)) == sorted(t.pk for t in orders[1:])
    assert {t.result["approved"] for t in done} == {True}
    assert Comment.objects.filter(text__startswith="Both from the framework").count() == 2


def test_the_bulk_reject_button_asks_first(page, expect, approver, orders):  # noqa: F811
    log_in(page, expect, "approver")
    page.goto(f"/admin/django_workflows/humantask/bulk-complete/?task={orders[0].pk}")
    expect(page.locator("#dwf-bulk-tasks tbody tr")).to_have_count(1)
    page.fill("#dwf-comment", "Not this quarter")

    # Playwright dismisses a dialog nobody answers: "Cancel" submits nothing.
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#dwf-bulk-form")).to_be_visible()
    assert HumanTask.objects.get(pk=orders[0].pk).status == TaskStatus.OPEN

    asked = accept_dialogs(page)
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".messagelist .success")).to_contain_text("1 task completed")
    assert asked == ["Reject: are you sure?"]
    assert HumanTask.objects.get(pk=orders[0].pk).result["approved"] is False


def test_the_task_page_shows_the_order_asks_a_comment_and_reassigns(
    page,
    expect,  # noqa: F811
    approver,
    other_manager,
    orders,
):
    task = orders[0]
    log_in(page, expect, "approver")
    page.goto(f"/admin/django_workflows/humantask/{task.pk}/complete/")

    # The order as a table above the form; the raw context folded away below.
    facts = page.locator("#dwf-task-facts")
    expect(facts.locator("#dwf-task-summary")).to_have_text("Ada Lovelace: Standing desk, 640 EUR")
    expect(facts.locator("tr", has_text="Supplier")).to_contain_text("Fabrikat GmbH")
    expect(facts.locator("tr", has_text="Amount (EUR)")).to_contain_text("640")
    above = page.evaluate(
        "document.querySelector('#dwf-task-facts').compareDocumentPosition("
        "document.querySelector('#dwf-complete-form')) & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    assert above, "the display table comes before the form"
    expect(page.locator("#dwf-task-raw")).not_to_have_attribute("open", "")
    expect(page.locator("#dwf-task-context")).not_to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_have_class("button default")
    expect(page.get_by_role("button", name="Reject")).to_have_class("button dwf-danger")
    expect(page.locator("label[for=dwf-comment]")).to_contain_text("required to Reject")

    # Reject without a comment: confirmed, then refused by the rule, nothing changed.
    asked = accept_dialogs(page)
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#dwf-complete-form .errorlist")).to_contain_text(
        "a comment is required to Reject"
    )
    assert asked == ["Reject: are you sure?"]
    assert HumanTask.objects.get(pk=task.pk).status == TaskStatus.OPEN

    # Hand it to a colleague instead, with a reason: who claimed it may.
    expect(page.locator("#dwf-reassign")).to_have_count(0)
    page.get_by_role("button", name="Claim").click()
    expect(page.locator(".messagelist .success")).to_contain_text("You claimed task")
    page.locator("#dwf-reassign > summary").click()
    form = page.locator("#dwf-reassign-form")
    form.locator("input[name=username]").fill("other_manager")
    form.locator("textarea[name=reason]").fill("Handles the Fabrikat account")
    page.locator("#dwf-task-raw > summary").click()
    expect(page.locator("#dwf-task-context")).to_contain_text('"supplier": "Fabrikat GmbH"')
    shoot(page, "admin-task-reassign.png")
    form.get_by_role("button", name="Reassign").click()

    expect(page.locator(".messagelist .success")).to_contain_text("reassigned to other_manager")
    moved = HumanTask.objects.get(pk=task.pk)
    assert moved.assignee == other_manager
    assert moved.status == TaskStatus.OPEN


def test_a_substitute_approves_for_an_absent_manager_and_the_history_says_so(
    page,
    expect,  # noqa: F811
    managers,
    orders,
):
    maria = grant(
        StaffFactory(username="maria", first_name="Maria", last_name="Schmidt", groups=[managers]),
        "view_workflowinstance",
        "view_humantask",
    )
    tom = grant(
        StaffFactory(username="tom", first_name="Tom", last_name="Berger"),
        "view_workflowinstance",
        "view_humantask",
    )
    task = orders[0]

    # Maria names Tom for her holiday, in the Substitutions admin.
    log_in(page, expect, "maria")
    page.goto("/admin/django_workflows/substitution/add/")
    expect(page.locator("input[name=user]")).to_have_count(0)  # the absent user: herself
    page.fill("input[name=substitute]", "tom")
    page.fill("input[name=ends_at_0]", (timezone.localdate() + timedelta(days=14)).isoformat())
    page.fill("input[name=ends_at_1]", "18:00:00")
    page.fill("input[name=reason]", "Holiday in Lisbon")
    shoot(page, "admin-substitution-add.png")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_be_visible()
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("tom")
    expect(row.locator(".field-state_display")).to_have_text("active")
    expect(row).to_contain_text("Holiday in Lisbon")
    shoot(page, "admin-substitutions.png")
    substitution = Substitution.objects.get()
    assert (substitution.user, substitution.substitute) == (maria, tom)

    # Tom, who is no manager, now finds the orders waiting for Maria (as a manager) in
    # his inbox, and approves one.
    page.context.clear_cookies()
    log_in(page, expect, "tom")
    page.goto("/admin/django_workflows/humantask/inbox/")
    expect(page.locator("tr.dwf-task")).to_have_count(3)
    page.locator(f'tr[data-task="{task.pk}"]').get_by_role("link").first.click()
    expect(page.locator("#dwf-task-summary")).to_contain_text("Ada Lovelace")
    page.fill("#dwf-comment", "Approved for Maria while she is away")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator(".messagelist .success")).to_contain_text("is now completed")

    # The instance page: who did it for whom, by name, and the comment.
    page.goto(f"/admin/django_workflows/workflowinstance/{task.instance_id}/change/")
    history = page.locator("#dwf-history")
    expect(history.locator(".dwf-on-behalf")).to_have_text("completed by tom on behalf of maria")
    expect(history).to_contain_text("HumanTaskCompleted")
    comments = page.locator("#dwf-comments tr.dwf-comment")
    expect(comments).to_have_count(1)
    expect(comments).to_contain_text("Approved for Maria while she is away")
    page.fill("#dwf-comment-text", "Ordered from Fabrikat, delivery in 3 weeks")
    page.get_by_role("button", name="Add comment").click()
    expect(page.locator(".messagelist .success")).to_contain_text("comment was added")
    expect(comments).to_have_count(2)
    expect(history).to_contain_text("CommentAdded")
    page.locator("#dwf-history").scroll_into_view_if_needed()
    shoot(page, "admin-history.png")
    done = HumanTask.objects.get(pk=task.pk)
    assert (done.completed_by, done.completed_on_behalf_of) == (tom, maria)


def test_two_of_three_board_members_approve_and_the_third_task_closes(
    page,
    expect,  # noqa: F811
    admin_engine,
):
    board = [
        grant(StaffFactory(username=name, first_name=first), "view_workflowinstance")
        for name, first in (("hedy", "Hedy"), ("linus", "Linus"), ("margaret", "Margaret"))
    ]
    admin_engine.registry.register_definition(
        WorkflowDefinition(
            name="capex",
            version="1",
            initial_step="board",
            steps={
                "board": BaseHumanStep(
                    title="Board approval",
                    assignees=board,
                    completion=2,
                    actions={"Approve": {"approved": True}, "Reject": {"approved": False}},
                    action_kinds={"Reject": "danger"},
                    summary="{project}: {amount} EUR",
                    display_fields={"project": "Project", "amount": "Amount (EUR)"},
                )
            },
        )
    )
    instance = admin_engine.start_workflow(
        "capex",
        initial_data={"project": "New warehouse racks", "amount": 48_000},
        business_key="CAPEX-2026-07",
    )
    tasks = list(HumanTask.objects.filter(instance=instance).order_by("slot"))
    assert [t.assignee for t in tasks] == board

    for user, task in zip(board[:2], tasks[:2], strict=True):
        page.context.clear_cookies()
        log_in(page, expect, user.username)
        page.goto("/admin/django_workflows/humantask/inbox/")
        expect(page.locator("tr.dwf-task")).to_have_count(1)  # each sees only their own
        expect(page.locator(f'tr[data-task="{task.pk}"] .dwf-summary')).to_have_text(
            "New warehouse racks: 48000 EUR"
        )
        page.get_by_role("link", name="Board approval").click()
        page.get_by_role("button", name="Approve").click()
        expect(page.locator(".messagelist .success")).to_contain_text("is completed (Approve)")

    # Two of three: the instance moved on, Margaret's task closed, and her page says why.
    page.context.clear_cookies()
    log_in(page, expect, "margaret")
    page.goto("/admin/django_workflows/humantask/inbox/")
    expect(page.locator("#dwf-inbox-empty")).to_be_visible()
    page.goto(f"/admin/django_workflows/humantask/{tasks[2].pk}/complete/")
    expect(page.locator("#dwf-not-open")).to_contain_text("canceled (completion reached)")
    expect(page.locator("#dwf-complete-form")).to_have_count(0)

    page.goto(f"/admin/django_workflows/workflowinstance/{instance.pk}/change/")
    expect(page.locator(".field-status_display .readonly")).to_have_text("Completed")
    history = page.locator("#dwf-history")
    expect(history.locator("tr", has_text="HumanTaskCompleted")).to_have_count(2)
    expect(history.locator("tr", has_text="HumanTaskCanceled")).to_contain_text(
        "completion reached"
    )
    expect(history).to_contain_text("Hedy")
    expect(history).not_to_contain_text("on behalf of")  # each voted for themselves
    shoot(page, "admin-nofm.png")
    instance = WorkflowInstance.objects.get(pk=instance.pk)
    assert instance.status == WorkflowStatus.COMPLETED
    assert [r["user"] for r in instance.context["board"]] == [board[0].pk, board[1].pk]
    closed = HumanTask.objects.get(pk=tasks[2].pk)
    assert (closed.status, closed.close_reason) == (TaskStatus.CANCELED, "completion reached")
