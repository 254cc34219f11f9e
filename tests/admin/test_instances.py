"""The workflow instance admin: list, filters, search, detail page, cancel and retry."""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_workflows import StateConflict, WorkflowStatus
from django_workflows.models import StepRun, TaskStatus, WorkflowEvent, WorkflowInstance

from . import workflows

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:django_workflows_workflowinstance_changelist")


def change_url(instance):
    return reverse("admin:django_workflows_workflowinstance_change", args=[instance.pk])


def cancel_url(instance):
    return reverse("admin:django_workflows_workflowinstance_cancel", args=[instance.pk])


def retry_url(instance):
    return reverse("admin:django_workflows_workflowinstance_retry", args=[instance.pk])


def texts(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def shown_ids(response):
    return {str(obj.pk) for obj in response.context["cl"].result_list}


def refreshed(instance):
    return WorkflowInstance.objects.get(pk=instance.pk)


# -- the list ---------------------------------------------------------------------------


def test_list_shows_status_definition_current_step_and_who_started(client, start, approver):
    client.force_login(approver)
    instance = start("approval", business_key="EXP-7", started_by=approver, amount=1)

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    assert str(instance.pk)[:8] in html
    assert "approval 1.0" in html
    assert '<span class="dwf-badge dwf-badge-waiting">Waiting</span>' in html
    assert '<td class="field-current_steps_display">approve</td>' in html
    assert "EXP-7" in html
    assert '<td class="field-started_by nowrap">approver</td>' in html
    assert response.context["cl"].show_full_result_count is False


def test_list_filters_by_status_definition_and_start_date(admin_client, start, waiting, failed):
    completed = start("check")  # waits at its human step
    WorkflowInstance.objects.filter(pk=completed.pk).update(
        started_at=timezone.now() - timedelta(days=30)
    )
    waiting_instance, _ = waiting

    by_status = admin_client.get(CHANGELIST, {"status__exact": "failed"})
    by_definition = admin_client.get(
        CHANGELIST, {"definition__id__exact": waiting_instance.definition_id}
    )
    # What the "Today" link of the date filter sends.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    by_date = admin_client.get(
        CHANGELIST, {"started_at__gte": str(today), "started_at__lt": str(today + timedelta(1))}
    )

    assert shown_ids(by_status) == {str(failed.pk)}
    assert shown_ids(by_definition) == {str(waiting_instance.pk)}
    assert shown_ids(by_date) == {str(waiting_instance.pk), str(failed.pk)}
    html = by_status.content.decode()
    for title in ("By status", "By definition", "By started at"):
        assert title in html


def test_the_definition_filter_reads_names_and_versions_not_graphs(admin_client, start, waiting):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    start("check")  # a second definition: the filter shows with two or more
    waiting_instance, _ = waiting
    definition = waiting_instance.definition
    table = definition._meta.db_table

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)

    [filter_] = [f for f in response.context["cl"].filter_specs if f.field_path == "definition"]
    assert (definition.pk, f"{definition.name} {definition.version}") in filter_.lookup_choices
    reads = [q["sql"] for q in queries if f'FROM "{table}"' in q["sql"]]
    assert reads and not any('"graph"' in sql for sql in reads), reads


def test_search_finds_by_id_its_start_and_business_key(admin_client, start):
    first = start("check", business_key="ORDER-1001")
    second = start("check", business_key="ORDER-2002")

    assert shown_ids(admin_client.get(CHANGELIST, {"q": str(first.pk)})) == {str(first.pk)}
    assert shown_ids(admin_client.get(CHANGELIST, {"q": str(second.pk)[:8]})) == {str(second.pk)}
    assert shown_ids(admin_client.get(CHANGELIST, {"q": "ORDER-2002"})) == {str(second.pk)}
    assert shown_ids(admin_client.get(CHANGELIST, {"q": "ORDER-"})) == {
        str(first.pk),
        str(second.pk),
    }
    assert shown_ids(admin_client.get(CHANGELIST, {"q": "nothing-like-it"})) == set()


def _list_queries(client, count, start):
    while WorkflowInstance.objects.count() < count:
        start("check", business_key=f"K{WorkflowInstance.objects.count()}")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == count
    return len(queries)


def test_list_queries_do_not_grow_with_the_rows(client, start, approver):
    client.force_login(approver)
    for n in range(3):
        start("approval", started_by=approver, amount=n)

    few = _list_queries(client, 3, start)
    many = _list_queries(client, 30, start)

    assert few == many


# -- the detail page --------------------------------------------------------------------


def test_detail_shows_context_runs_history_open_tasks_and_graph(admin_client, waiting):
    instance, task = waiting

    response = admin_client.get(change_url(instance))

    assert response.status_code == 200
    html = response.content.decode()
    assert "&quot;amount&quot;: 120" in html  # the context, pretty-printed and escaped
    assert [run.step_name for run in response.context["step_runs"]] == ["submit", "approve"]
    events = [e.type for e in response.context["events"]]
    assert events == list(
        WorkflowEvent.objects.filter(instance=instance)
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert events[0] == "WorkflowStarted"
    assert reverse("admin:django_workflows_humantask_complete", args=[task.pk]) in html
    assert "Approve the expense" in html
    # The graph: inline SVG, steps colored by state, the taken edge marked, a legend.
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="dwf-graph"') == 1
    assert 'data-step="submit" data-state="completed"' in html
    assert 'data-step="approve" data-state="current"' in html
    assert 'data-step="pay" data-state="pending"' in html
    assert 'data-source="submit" data-target="approve" data-taken="true"' in html
    assert 'data-source="approve" data-target="pay" data-taken="false"' in html
    assert "approved == True" in html
    assert 'class="dwf-legend"' in html
    assert '<script src="http' not in html


def test_detail_of_a_failed_instance_shows_the_error_and_traceback(admin_client, failed):
    response = admin_client.get(change_url(failed))

    html = response.content.decode()
    assert "RuntimeError: payment service down" in html
    assert "Traceback (most recent call last)" in html
    assert 'data-step="charge" data-state="failed"' in html
    assert 'data-step="start" data-state="completed"' in html
    assert ">Retry</a>" in html
    assert ">Cancel instance</a>" in html


def test_detail_counts_crashes_apart_from_the_steps_own_attempts(admin_client, failed):
    """A run recovered after its worker died was claimed twice but tried once."""
    StepRun.objects.filter(instance=failed, step_name="charge").update(
        attempt=2, crashes=1, max_attempts=1
    )
    html = admin_client.get(change_url(failed)).content.decode()
    row = html[html.index("<td>charge</td>") :].split("</tr>")[0]
    assert '1 / 1 <small class="dwf-crashes">+ 1 crash</small>' in row


def test_detail_escapes_html_from_the_context_and_business_key(admin_client, start):
    attack = "<script>alert('pwned')</script>"
    instance = start("check", business_key='<img src=x onerror="alert(1)">', note=attack)

    response = admin_client.get(change_url(instance))
    listing = admin_client.get(CHANGELIST)

    html = response.content.decode()
    assert attack not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<img src=x" not in listing.content.decode()


def test_instances_are_read_only_even_for_a_superuser(admin_client, waiting):
    instance, _ = waiting
    before = refreshed(instance).updated_at

    add = admin_client.get(reverse("admin:django_workflows_workflowinstance_add"))
    post = admin_client.post(change_url(instance), {"status": "completed", "business_key": "x"})
    delete = admin_client.get(
        reverse("admin:django_workflows_workflowinstance_delete", args=[instance.pk])
    )
    page = admin_client.get(change_url(instance))

    assert (add.status_code, post.status_code, delete.status_code) == (403, 403, 403)
    assert refreshed(instance).status == WorkflowStatus.WAITING
    assert refreshed(instance).updated_at == before
    assert 'name="_save"' not in page.content.decode()


# -- cancel -----------------------------------------------------------------------------


def test_cancel_from_the_detail_page_asks_for_a_reason(admin_client, admin_user, waiting):
    instance, task = waiting

    page = admin_client.get(cancel_url(instance))
    empty = admin_client.post(cancel_url(instance), {"reason": "   "})
    assert refreshed(instance).status == WorkflowStatus.WAITING
    done = admin_client.post(cancel_url(instance), {"reason": "Duplicate claim"})

    assert page.status_code == 200
    assert 'name="reason"' in page.content.decode()
    assert "dwf-cancel-confirmation" in page.content.decode()
    assert "&rsaquo; Cancel\n</div>" in page.content.decode()  # the breadcrumb
    assert empty.status_code == 200
    assert "This field is required." in empty.content.decode()
    assert done.status_code == 302
    assert done.url == change_url(instance)
    instance = refreshed(instance)
    assert instance.status == WorkflowStatus.CANCELED
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELED
    event = WorkflowEvent.objects.get(instance=instance, type="WorkflowCanceled")
    assert event.payload["reason"] == "Duplicate claim"
    assert any("was canceled" in text for text in texts(done))
    log = LogEntry.objects.get(object_id=str(instance.pk))
    assert log.user == admin_user
    assert "Duplicate claim" in log.change_message


def test_cancel_of_a_finished_instance_is_a_message_not_an_error(admin_client, waiting):
    instance, _ = waiting
    admin_client.post(cancel_url(instance), {"reason": "first"})

    again = admin_client.get(cancel_url(instance))
    repost = admin_client.post(cancel_url(instance), {"reason": "second"}, follow=True)

    assert again.status_code == 302
    assert repost.status_code == 200
    assert any("already canceled" in text for text in texts(repost))
    assert WorkflowEvent.objects.filter(instance=instance, type="WorkflowCanceled").count() == 1


def test_cancel_losing_a_race_reports_the_conflict(
    admin_client, waiting, admin_engine, monkeypatch
):
    instance, _ = waiting

    def finished_meanwhile(instance_id, reason=""):
        raise StateConflict(f"instance {instance_id} is already completed")

    monkeypatch.setattr(admin_engine, "cancel_workflow", finished_meanwhile)
    response = admin_client.post(cancel_url(instance), {"reason": "late"}, follow=True)

    assert response.status_code == 200
    assert any(
        "was not canceled: instance" in t and "already completed" in t for t in texts(response)
    )


def test_cancel_action_confirms_with_a_reason_and_reports_each_instance(admin_client, start):
    first = start("approval", amount=1)
    second = start("approval", amount=2)
    done = start("payment", amount=3)  # completes at once
    selected = [str(i.pk) for i in (first, second, done)]

    confirm = admin_client.post(
        CHANGELIST, {"action": "cancel_instances", "_selected_action": selected, "index": 0}
    )
    response = admin_client.post(
        CHANGELIST,
        {
            "action": "cancel_instances",
            "_selected_action": selected,
            "post": "yes",
            "reason": "Q3 freeze",
        },
    )

    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert 'name="reason"' in html
    assert "Not canceled, already finished:" in html
    assert html.count('name="_selected_action"') == 3
    assert response.status_code == 302
    assert refreshed(first).status == refreshed(second).status == WorkflowStatus.CANCELED
    assert refreshed(done).status == WorkflowStatus.COMPLETED
    messages = texts(response)
    assert sum("was canceled" in m for m in messages) == 2
    assert sum("was not canceled: it is already completed" in m for m in messages) == 1


def test_cancel_action_without_a_reason_shows_the_form_again(admin_client, waiting):
    instance, _ = waiting

    response = admin_client.post(
        CHANGELIST,
        {"action": "cancel_instances", "_selected_action": [str(instance.pk)], "post": "yes"},
    )

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert refreshed(instance).status == WorkflowStatus.WAITING


# -- retry ------------------------------------------------------------------------------


def test_retry_from_the_failed_step(admin_client, failed):
    page = admin_client.get(retry_url(failed))
    response = admin_client.post(retry_url(failed), {"from_step": ""})

    assert page.status_code == 200
    assert "the failed step (charge)" in page.content.decode()
    assert "dwf-retry-confirmation" in page.content.decode()
    assert "&rsaquo; Retry\n</div>" in page.content.decode()
    assert response.status_code == 302
    instance = refreshed(failed)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["paid"] == 50
    retried = WorkflowEvent.objects.get(instance=instance, type="WorkflowRetried")
    assert retried.step_name == "charge"
    assert StepRun.objects.filter(instance=instance, step_name="start").count() == 1
    assert any("retried from step charge; it is now completed" in t for t in texts(response))


def test_retry_from_a_chosen_step(admin_client, failed):
    response = admin_client.post(retry_url(failed), {"from_step": "start"})

    assert response.status_code == 302
    instance = refreshed(failed)
    assert instance.status == WorkflowStatus.COMPLETED
    assert WorkflowEvent.objects.get(instance=instance, type="WorkflowRetried").step_name == "start"
    assert StepRun.objects.filter(instance=instance, step_name="start").count() == 2


def test_retry_rejects_a_step_the_definition_does_not_have(admin_client, failed):
    response = admin_client.post(retry_url(failed), {"from_step": "nope"})

    assert response.status_code == 200
    assert "Select a valid choice." in response.content.decode()
    assert refreshed(failed).status == WorkflowStatus.FAILED


def test_retry_that_fails_again_says_so(admin_client, failed):
    workflows.PAYMENT_DOWN["on"] = True

    response = admin_client.post(retry_url(failed), {"from_step": ""}, follow=True)

    assert refreshed(failed).status == WorkflowStatus.FAILED
    assert any("failed again at step charge" in t for t in texts(response))


def test_retry_of_an_instance_that_is_not_failed_is_a_message(admin_client, waiting):
    instance, _ = waiting

    response = admin_client.post(retry_url(instance), {"from_step": ""}, follow=True)

    assert response.status_code == 200
    assert any("only a failed instance is retried" in t for t in texts(response))
    assert not WorkflowEvent.objects.filter(instance=instance, type="WorkflowRetried").exists()


def test_retry_action_retries_the_failed_and_skips_the_others(admin_client, failed, waiting):
    other, _ = waiting
    selected = [str(failed.pk), str(other.pk)]

    confirm = admin_client.post(
        CHANGELIST, {"action": "retry_instances", "_selected_action": selected, "index": 0}
    )
    response = admin_client.post(
        CHANGELIST,
        {"action": "retry_instances", "_selected_action": selected, "post": "yes", "from_step": ""},
    )

    assert confirm.status_code == 200
    assert 'name="from_step"' in confirm.content.decode()
    assert response.status_code == 302
    assert refreshed(failed).status == WorkflowStatus.COMPLETED
    assert refreshed(other).status == WorkflowStatus.WAITING
    messages = texts(response)
    assert any("retried from step charge" in m for m in messages)
    assert any("was not retried: it is waiting" in m for m in messages)


def test_retry_action_with_nothing_failed_reports_without_a_page(admin_client, waiting):
    instance, _ = waiting

    response = admin_client.post(
        CHANGELIST,
        {"action": "retry_instances", "_selected_action": [str(instance.pk)], "index": 0},
    )

    assert response.status_code == 302
    assert any("was not retried" in m for m in texts(response))


# -- permissions --------------------------------------------------------------------------


def test_view_permission_shows_pages_without_cancel_or_retry(client, approver, failed):
    client.force_login(approver)

    listing = client.get(CHANGELIST)
    detail = client.get(change_url(failed))
    cancel_page = client.get(cancel_url(failed))
    retry_page = client.post(retry_url(failed), {"from_step": ""})
    action = client.post(
        CHANGELIST,
        {
            "action": "cancel_instances",
            "_selected_action": [str(failed.pk)],
            "post": "yes",
            "reason": "x",
        },
    )

    assert listing.status_code == detail.status_code == 200
    assert listing.context["action_form"] is None  # no action offered, so no checkboxes
    assert ">Retry</a>" not in detail.content.decode()
    assert ">Cancel instance</a>" not in detail.content.decode()
    assert cancel_page.status_code == retry_page.status_code == 403
    assert action.status_code == 200  # the action is unknown to this user: nothing happens
    assert refreshed(failed).status == WorkflowStatus.FAILED


def test_change_permission_alone_allows_cancel_and_retry(client, operator, failed, waiting):
    client.force_login(operator)
    instance, _ = waiting

    listing = client.get(CHANGELIST)
    client.post(retry_url(failed), {"from_step": ""})
    client.post(cancel_url(instance), {"reason": "operator says so"})

    assert {"cancel_instances", "retry_instances"} <= set(
        dict(listing.context["action_form"].fields["action"].choices)
    )
    assert refreshed(failed).status == WorkflowStatus.COMPLETED
    assert refreshed(instance).status == WorkflowStatus.CANCELED


@pytest.mark.parametrize(
    "url",
    ["change", "cancel", "retry", reverse("admin:django_workflows_definitionversion_changelist")],
)
def test_staff_without_view_permission_gets_403(client, bare_staff, failed, url):
    client.force_login(bare_staff)
    url = {"change": change_url, "cancel": cancel_url, "retry": retry_url}.get(url, lambda _: url)(
        failed
    )

    response = client.get(url)

    assert response.status_code == 403


@pytest.mark.parametrize(
    "url",
    [CHANGELIST, reverse("admin:django_workflows_humantask_changelist")],
)
def test_staff_without_view_permission_list_only_their_own(client, bare_staff, failed, url):
    client.force_login(bare_staff)

    response = client.get(url)

    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


def test_a_staff_starter_sees_and_cancels_their_own_instance(client, bare_staff, start, failed):
    mine = start("approval", business_key="MINE", started_by=bare_staff, amount=5)
    client.force_login(bare_staff)

    listing = client.get(CHANGELIST)
    detail = client.get(change_url(mine))
    others = client.get(change_url(failed))
    client.post(cancel_url(mine), {"reason": "mine to cancel"})

    assert shown_ids(listing) == {str(mine.pk)}
    assert detail.status_code == 200
    assert ">Cancel instance</a>" in detail.content.decode()
    assert others.status_code == 403
    assert refreshed(mine).status == WorkflowStatus.CANCELED


def test_non_staff_are_sent_to_the_login_page(client, outsider, failed):
    client.force_login(outsider)

    response = client.get(change_url(failed))

    assert response.status_code == 302
    assert re.match(r"^/admin/login/\?next=", response.url)
