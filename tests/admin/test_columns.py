"""The lists' short cells: a result on one line with the whole in a tooltip, who a task
is for, compact dates."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_workflows.admin.columns import RESULT_CHARS, one_line, short_datetime
from django_workflows.models import HumanTask

pytestmark = pytest.mark.django_db

TASKS = reverse("admin:django_workflows_humantask_changelist")


def test_one_line_cuts_long_text_and_keeps_it_whole_in_the_tooltip():
    text = "x" * (RESULT_CHARS + 10) + "<b>"

    cell = one_line(text)

    assert cell == f'<span class="dwf-one-line" title="{"x" * 70}&lt;b&gt;">{"x" * 60}…</span>'
    assert one_line("short") == '<span class="dwf-one-line" title="short">short</span>'


def test_short_datetime_is_local_date_and_time():
    value = timezone.make_aware(timezone.datetime(2026, 3, 4, 5, 6))

    assert short_datetime(value).endswith(
        '<span class="dwf-date">2026-03-04</span> <span class="dwf-time">05:06</span></time>'
    )
    assert short_datetime(None) == "-"


def test_the_task_list_shows_result_for_and_completed_by_in_short(
    admin_client, admin_engine, start, approver
):
    done = HumanTask.objects.get(instance=start("approval", amount=1))
    admin_engine.complete_task(done.pk, approver, {"comments": "fine " * 30}, action="Approve")
    claimed = HumanTask.objects.get(instance=start("approval", amount=2))
    admin_engine.claim_task(claimed.pk, approver)
    start("approval", amount=3)

    html = admin_client.get(TASKS).content.decode()

    assert '<td class="field-result_short"><span class="dwf-one-line" title="{&quot;amount' in html
    assert "…</span></td>" in html
    assert 'title="claimed by approver">claimed by approver</span>' in html
    assert '<td class="field-for_display"><span class="dwf-one-line" title="managers">' in html
    assert (
        '<td class="field-completed_by_display"><span class="dwf-one-line" title="approver">'
        in (html)
    )


def _list_queries(client, start, count):
    while HumanTask.objects.count() < count:
        start("approval", amount=HumanTask.objects.count())
    with CaptureQueriesContext(connection) as queries:
        response = client.get(TASKS)
    assert len(response.context["cl"].result_list) == count
    return len(queries)


def test_the_task_list_queries_do_not_grow_with_the_rows(admin_client, start):
    # The "for" column's groups come prefetched: one query for the page.
    assert _list_queries(admin_client, start, 2) == _list_queries(admin_client, start, 12)
