"""The admin lists fit a 1280 x 800 window with the navigation sidebar open: every
column header ends inside the viewport and the page does not scroll sideways, with long
titles, summaries, results, business keys and user names.
"""

import pytest
from django.utils import timezone

from django_workflows.models import HumanTask, Substitution, TaskStatus, WorkflowInstance

from ..factories import StaffFactory
from .test_browser import CHROMIUM, browser, expect, log_in  # noqa: F401 (fixtures)

WIDTH, HEIGHT = 1280, 800
LISTS = {
    "tasks": "/admin/django_workflows/humantask/",
    "instances": "/admin/django_workflows/workflowinstance/",
    "definitions": "/admin/django_workflows/definitionversion/",
    "substitutions": "/admin/django_workflows/substitution/",
    "signals": "/admin/django_workflows/workflowsignal/",
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


@pytest.fixture(params=["sidebar open", "sidebar closed"])
def page(browser, live_server, request):  # noqa: F811 (this module's window)
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": WIDTH, "height": HEIGHT}
    )
    is_open = "true" if request.param == "sidebar open" else "false"
    context.add_init_script(f"localStorage.setItem('django.admin.navSidebarIsOpen', '{is_open}')")
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.sidebar_open = is_open == "true"
    yield page
    context.close()


@pytest.fixture
def long_rows(start, admin_engine, managers):
    """Rows as long as real ones get: open, claimed and completed tasks, long texts."""
    reviewer = StaffFactory(
        username="margaret.hamilton-lovelace",
        first_name="Margaret",
        last_name="Hamilton",
        groups=[managers],
    )
    long_title = "Approve the quarterly travel expense report of the regional sales team"
    for n in range(8):
        instance = start(
            "approval",
            business_key=f"EXPENSE-2026-Q4-EMEA-REGIONAL-SALES-{n:04d}",
            started_by=reviewer,
            amount=1200 + n,
        )
        task = HumanTask.objects.get(instance=instance)
        admin_engine.send_signal(  # buffered (discarded once completed)
            "payment_received_from_the_provider_webhook",
            {"provider_event": "evt_" + "0123456789abcdef" * 4, "payload": "x" * 500},
            instance_id=instance.pk,
        )
        HumanTask.objects.filter(pk=task.pk).update(
            title=f"{long_title} #{n}",
            summary=f"Travel to Lisbon, Porto and Madrid for the customer summit {n}: 1,234.56 EUR",
        )
        if n % 2:
            admin_engine.complete_task(
                task.pk,
                reviewer,
                {
                    "comments": "Receipts checked against the policy; the hotel was over budget "
                    * 3,
                    "amount_approved": 1200 + n,
                },
                action="Approve",
            )
        elif n % 4 == 0:
            admin_engine.claim_task(task.pk, reviewer)
    HumanTask.objects.filter(status=TaskStatus.OPEN).update(due_at=timezone.now())
    for n in range(3):
        start("check", business_key=f"PURCHASE-ORDER-2026-0000{n}-WITH-A-LONG-REFERENCE")
    assert WorkflowInstance.objects.count() == 11
    deputy = StaffFactory(username="alexandra.konstantinopoulou", first_name="Alexandra")
    for n in range(3):
        Substitution.objects.create(
            user=reviewer,
            substitute=deputy,
            starts_at=timezone.now() + timezone.timedelta(days=30 * n),
            ends_at=timezone.now() + timezone.timedelta(days=30 * n + 14),
            reason="Parental leave, then the customer summit in Lisbon and Porto " * 2,
        )
    return reviewer


def overflow(page):
    """The column headers (and thumbnails) that end beyond what is visible: past the
    window, or past the list's own box (which would scroll them sideways); and how far
    the page and the list scroll sideways."""
    return page.evaluate(
        """() => {
            const width = document.documentElement.clientWidth;
            const results = document.querySelector('#changelist-form .results');
            const box = results.getBoundingClientRect();
            const limit = Math.min(width, box.right);
            const out = [];
            const seen = [];
            for (const el of document.querySelectorAll(
                    '#result_list thead th, #result_list .dwf-thumbnail svg')) {
                const rect = el.getBoundingClientRect();
                const name = el.tagName === 'TH' ? el.innerText.trim() : 'thumbnail';
                seen.push(name);
                if (rect.right > limit + 0.5 || rect.left < box.left - 0.5)
                    out.push([name, Math.round(rect.right), Math.round(limit)]);
                if (el.tagName !== 'TH' && rect.width < 150) out.push([name, 'width', rect.width]);
            }
            return {
                beyond: out,
                page: document.documentElement.scrollWidth - width,
                list: results.scrollWidth - results.clientWidth,
                seen: seen,
            };
        }"""
    )


@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_column_is_within_a_1280_px_window(page, expect, long_rows, name):  # noqa: F811
    StaffFactory(username="root", is_superuser=True)
    log_in(page, expect, "root")

    page.goto(LISTS[name])
    sidebar = page.locator("#nav-sidebar")
    if page.sidebar_open:
        expect(sidebar).to_be_visible()
    else:
        expect(sidebar).to_be_hidden()
    expect(page.locator("#result_list tbody tr").first).to_be_visible()
    found = overflow(page)

    assert len(found["seen"]) >= 6
    assert found["beyond"] == []
    assert found["page"] <= 0
    assert found["list"] <= 0
    if name == "definitions":
        assert found["seen"].count("thumbnail") == 2


@pytest.mark.parametrize("name", ["tasks", "instances"])
def test_a_selected_filter_covers_no_other_option(page, expect, long_rows, name):  # noqa: F811
    StaffFactory(username="root", is_superuser=True)
    log_in(page, expect, "root")

    page.goto(f"{LISTS[name]}?status__exact=completed")
    expect(page.locator("#changelist-filter li.selected").first).to_be_visible()
    overlaps = page.evaluate(
        """() => {
            const out = [];
            for (const ul of document.querySelectorAll('#changelist-filter ul')) {
                const items = [...ul.querySelectorAll(':scope > li')];
                for (let i = 1; i < items.length; i++) {
                    const a = items[i - 1].getBoundingClientRect();
                    const b = items[i].getBoundingClientRect();
                    const sameLine = Math.abs(a.top - b.top) < 2;
                    if (sameLine && b.left < a.right - 0.5)
                        out.push([items[i - 1].innerText, items[i].innerText]);
                }
            }
            return out;
        }"""
    )

    assert overlaps == []
