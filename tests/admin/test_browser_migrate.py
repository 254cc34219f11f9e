"""The "Migrate to another version…" action in a real browser (Chromium, as in
test_browser.py): select, preview the plan, map a removed step, migrate.

``UPDATE_SCREENSHOTS=1`` also takes ``docs/_static/screenshots/admin-migrate.png``.
"""

import pytest

from django_workflows.models import HumanTask, WorkflowEvent, WorkflowInstance

from ..engine.test_migration import payment_v1, payment_v2
from ..factories import StaffFactory
from .conftest import grant
from .test_browser import ARGS, CHROMIUM, browser, expect  # noqa: F401  (fixtures)
from .test_browser_screens import log_in, page, shoot  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


@pytest.fixture
def invoices(admin_engine):
    """Three invoices of billing 1.0.0: two wait at the approval, one at the review that
    2.0.0 removes."""
    admin_engine.registry.register_definition(payment_v1("billing"))
    started = [
        admin_engine.start_workflow("billing", business_key=f"INV-{n}", initial_data=data)
        for n, data in ((101, {}), (102, {}), (103, {"kind": "review"}))
    ]
    admin_engine.registry.register_definition(payment_v2("billing"))
    return started


def test_an_operator_previews_maps_and_migrates(page, expect, invoices):  # noqa: F811
    grant(StaffFactory(username="operator"), "view_workflowinstance", "change_workflowinstance")
    log_in(page, expect, "operator")

    page.goto("/admin/django_workflows/workflowinstance/")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "migrate_instances")
    page.click("button[name=index]")

    # The preview: the plan, with the instance at the removed step blocked.
    plan = page.locator("table.dwf-migration-plan")
    expect(page.locator("h2", has_text="The plan")).to_contain_text("2 movable, 1 blocked")
    expect(plan.locator("tr.dwf-blocked")).to_contain_text(
        "step 'review' removed in 2.0.0 and not mapped"
    )
    # Map the removed step to the approval and preview again: all three can move.
    page.select_option("select[name=map__review]", "approval")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("h2", has_text="The plan")).to_contain_text("3 movable, 0 blocked")
    expect(plan.locator("tr.dwf-movable")).to_have_count(3)
    shoot(page, "admin-migrate.png")

    page.get_by_role("button", name="Migrate").click()
    expect(page.locator(".messagelist .success")).to_have_count(3)
    expect(page.locator(".messagelist")).to_contain_text("was migrated to 2.0.0")

    assert (
        sorted(WorkflowInstance.objects.values_list("definition__version", flat=True))
        == ["2.0.0"] * 3
    )
    assert WorkflowEvent.objects.filter(type="InstanceMigrated").count() == 3
    reviewed = invoices[2]
    assert HumanTask.objects.get(instance=reviewed, status="open").step_name == "approval"
