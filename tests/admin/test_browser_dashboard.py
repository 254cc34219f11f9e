"""The dashboard in a real browser (Chromium, as in test_browser.py): two weeks of three
workflows, the charts drawn, and a failing step's link to its failed instances.

``UPDATE_SCREENSHOTS=1`` also takes ``docs/_static/screenshots/admin-dashboard.png``.
"""

import random
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from django_workflows.models import WorkflowInstance

from ..factories import StaffFactory
from .conftest import grant
from .test_browser import CHROMIUM, browser, expect  # noqa: F401  (fixtures)
from .test_browser_screens import log_in, page, shoot  # noqa: F401  (fixtures)
from .test_dashboard import definition, instance, run, task

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}"),
]

#: workflow: (its machine steps with their typical seconds, the step that fails, how often)
WORKFLOWS = {
    "invoice": ({"extract": 2.0, "book": 0.4, "archive": 0.2}, "book", 0.08),
    "onboarding": ({"create_account": 1.0, "send_laptop": 6.0}, "send_laptop", 0.04),
    "purchase_order": ({"check_budget": 0.3, "order": 3.0}, "order", 0.02),
}
GROUPS = ("managers", "finance", "it", "legal")


@pytest.fixture
def history(db):
    """About 250 instances over the last 30 days, with failures, waiting tasks and a
    few runs in the worker's queue."""
    rng = random.Random(19)
    now = timezone.now()
    failed = 0
    for name, (steps, failing, rate) in WORKFLOWS.items():
        row = definition(name)
        for _ in range(rng.randint(70, 100)):
            started = now - timedelta(days=rng.uniform(0, 29))
            fails = rng.random() < rate * 2
            waiting = not fails and rng.random() < 0.1
            status = "failed" if fails else "waiting" if waiting else "completed"
            finished = None if waiting else started + timedelta(minutes=1)
            owner = instance(row, status, started, finished, failed_step=failing if fails else "")
            failed += fails and name == "invoice"
            at = started
            for step, seconds in steps.items():
                queued, at = at, at + timedelta(seconds=rng.expovariate(2))
                took = rng.expovariate(1 / seconds)
                broken = fails and step == failing
                run(owner, step, "failed" if broken else "completed", at, took, queued=queued)
                at += timedelta(seconds=took)
                if broken:
                    break
            if waiting:
                age = timedelta(hours=rng.choice((0.5, 5, 30, 100, 200)))
                due = now - age + timedelta(days=3) if age > timedelta(days=3) else None
                title = f"Approve {name.replace('_', ' ')} #{owner.pk.hex[:6]}"
                task(owner, [rng.choice(GROUPS)], age, due=due, now=now, title=title)
            elif rng.random() < 0.05:  # held up in the worker's queue
                owner.status = "running"
                owner.save(update_fields=["status"])
                late = now - timedelta(seconds=rng.uniform(1, 90))
                run(owner, "notify", "queued", queued=late)
    return failed


def test_the_dashboard_shows_its_charts_and_links_a_failing_step(
    page,  # noqa: F811
    expect,  # noqa: F811
    history,
):
    grant(StaffFactory(username="ops", is_superuser=True), "view_dashboard")
    log_in(page, expect, "ops")
    page.click("text=Dashboard")
    expect(page.locator("h1")).to_have_text("Dashboard")
    charts = page.locator("svg.dwf-chart[role=img]")
    expect(charts).to_have_count(5)
    expect(page.locator("#dwf-per-day circle.dwf-s-started").first).to_be_visible()
    expect(page.locator("#dwf-slowest rect.dwf-s-p95").first).to_be_visible()
    expect(page.locator("#dwf-waiting text.dwf-s-overdue-text").first).to_contain_text("overdue")
    expect(page.locator(".dwf-overdue-list tr").first).to_contain_text("Approve")
    shoot(page, "admin-dashboard.png")

    page.select_option("#id_workflow", "invoice")
    page.click("input[type=submit][value=Show]")
    link = page.locator("#dwf-failing svg a").first
    expect(link).to_contain_text(f"{history} failed instances")
    link.click()
    expect(page).to_have_url(re.compile(r"status__exact=failed&failed_step=book"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(history)
    expect(rows.first).to_contain_text("invoice")
    assert WorkflowInstance.objects.filter(status="failed", failed_step="book").count() == history
