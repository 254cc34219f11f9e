"""The screenshots in the docs (``docs/_static/screenshots/``): they exist, are small and
are used; ``UPDATE_SCREENSHOTS=1`` takes them again from the live admin with Chromium.

``task.png`` and ``instance.png`` show the quickstart's workflow (the ``expenses/workflows.py``
block of ``docs/quickstart.md``) as a reader who follows the quickstart sees it: the task page
before the approval, and the instance page after it. Taking them is a test of its own, so
that the normal run does not rewrite tracked files. The others are taken by the browser
scenarios that check those screens (see ``USED_BY``), when ``UPDATE_SCREENSHOTS=1``.
"""

import os
import struct
from pathlib import Path

import pytest

import django_workflows.engine as engine_package
from django_workflows.models import HumanTask

from ..factories import StaffFactory
from ..snippets import DOCS, isolated_engine, run_quickstart_workflows

SCREENSHOTS = DOCS / "_static" / "screenshots"
#: Each screenshot and the pages that show it.
USED_BY = {
    "task.png": ["quickstart.md", "admin.md"],
    "instance.png": ["quickstart.md", "admin.md"],
    # Taken by tests/app/test_browser.py.
    "app-inbox.png": ["howto/app-inbox.md"],
    "app-task.png": ["howto/app-inbox.md"],
    # Taken by the scenarios of tests/admin/test_browser_screens.py.
    "admin-index.png": ["admin.md"],
    "admin-inbox.png": ["admin.md", "howto/comments-and-bulk-approval.md"],
    "admin-bulk.png": ["admin.md", "howto/comments-and-bulk-approval.md"],
    "admin-task-reassign.png": ["admin.md"],
    "admin-history.png": [
        "admin.md",
        "howto/substitutes.md",
        "howto/comments-and-bulk-approval.md",
    ],
    "admin-substitution-add.png": ["admin.md", "howto/substitutes.md"],
    "admin-substitutions.png": ["admin.md"],
    "admin-nofm.png": ["admin.md", "howto/n-of-m-approvals.md"],
    # Taken by tests/admin/test_browser_dashboard.py.
    "admin-dashboard.png": ["admin.md"],
    # Taken by tests/admin/test_browser_migrate.py.
    "admin-migrate.png": ["admin.md", "howto/new-version.md"],
}
WIDTH = 1280
MAX_BYTES = 250_000
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.mark.parametrize("name", sorted(USED_BY))
def test_screenshot_exists_is_small_and_is_shown(name):
    path = SCREENSHOTS / name
    assert path.is_file(), f"missing {path}: run UPDATE_SCREENSHOTS=1 pytest -m browser {__file__}"
    width, height = png_size(path)
    assert width == WIDTH
    assert height >= 400
    assert path.stat().st_size <= MAX_BYTES
    for page in USED_BY[name]:
        assert f"_static/screenshots/{name}" in (DOCS / page).read_text(), page


@pytest.fixture
def quickstart_engine(admin_engine, monkeypatch):
    """``get_engine()`` on the quickstart's workflow (over the admin tests' engine)."""
    with isolated_engine() as engine:
        run_quickstart_workflows()
    monkeypatch.setattr(engine_package, "_default", engine)
    return engine


def save_small(page, path):
    """A full-page PNG at 1280 px, reduced to a 256-colour palette."""
    from PIL import Image

    raw = path.with_suffix(".raw.png")
    page.screenshot(path=str(raw), full_page=True, animations="disabled")
    try:
        with Image.open(raw) as image:
            small = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
            small.save(path, optimize=True)
    finally:
        raw.unlink()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    os.environ.get("UPDATE_SCREENSHOTS") != "1", reason="set UPDATE_SCREENSHOTS=1 to retake them"
)
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}")
def test_update_screenshots(quickstart_engine, live_server):
    from playwright.sync_api import expect, sync_playwright

    StaffFactory(username="admin", is_superuser=True)
    instance = quickstart_engine.start_workflow(
        "expense_claim",
        initial_data={"amount": 120, "employee": "Ada"},
        business_key="EXP-2024-001",
    )
    task = HumanTask.objects.get(instance=instance)

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop in this thread
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=ARGS
            )
            context = browser.new_context(
                base_url=live_server.url, viewport={"width": WIDTH, "height": 800}
            )
            # The navigation sidebar lists the test project's other apps: keep it closed.
            context.add_init_script(
                "localStorage.setItem('django.admin.navSidebarIsOpen', 'false')"
            )
            page = context.new_page()
            page.goto("/admin/login/?next=/admin/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "pw")
            page.click("input[type=submit]")
            expect(page.locator("#user-tools")).to_be_visible()

            page.goto(f"/admin/django_workflows/humantask/{task.pk}/complete/")
            page.fill("textarea[name=comments]", "Receipts checked")
            save_small(page, SCREENSHOTS / "task.png")

            page.get_by_role("button", name="Approve").click()
            expect(page.locator(".messagelist .success")).to_contain_text("is now completed")
            page.goto(f"/admin/django_workflows/workflowinstance/{instance.pk}/change/")
            expect(page.locator(".field-status_display .readonly")).to_have_text("Completed")
            save_small(page, SCREENSHOTS / "instance.png")
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)

    for name in USED_BY:
        assert png_size(SCREENSHOTS / name)[0] == WIDTH
