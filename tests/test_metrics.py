"""Prometheus metrics: scraped over a request, counters, histograms and database gauges."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from django_workflows import WorkflowRegistry, WorkflowStatus
from django_workflows.engine import LocalExecutionEngine
from django_workflows.models import HumanTask, StepRun
from django_workflows.testing import InProcessWorker

from . import workflows
from .observability import own_registry, workflow_settings

pytestmark = pytest.mark.django_db

AUTH = {"HTTP_AUTHORIZATION": "Bearer s3cret"}


def scrape(client, **headers):
    """The samples of one scrape of /metrics: {(name, labels...): value}."""
    response = client.get("/metrics", **(headers or AUTH))
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, *sorted(labels.items())), 0.0)


@pytest.fixture
def engine():
    reg = WorkflowRegistry()
    for factory in (
        workflows.parallel_notifications,
        workflows.expense_approval,
        lambda: workflows.retrying(max_attempts=2, succeed_on=2),
    ):
        reg.register_definition(factory())
    return LocalExecutionEngine(reg)


def test_counters_and_step_histograms_after_workflows(
    client, engine, django_capture_on_commit_callbacks
):
    with own_registry():
        with django_capture_on_commit_callbacks(execute=True):  # events: after commit
            done = engine.start_workflow("notifications")
            retried = engine.start_workflow("retrying")
            canceled = engine.start_workflow("expense", initial_data={"amount": 5})
            engine.cancel_workflow(canceled.pk, reason="test")
        samples = scrape(client)

    assert done.status == retried.status == WorkflowStatus.COMPLETED
    started = "django_workflows_instances_started_total"
    assert value(samples, started, workflow="notifications") == 1
    assert value(samples, started, workflow="retrying") == 1
    assert value(samples, started, workflow="expense") == 1
    completed = "django_workflows_instances_completed_total"
    assert value(samples, completed, workflow="notifications") == 1
    assert value(samples, "django_workflows_instances_canceled_total", workflow="expense") == 1
    executed = "django_workflows_steps_executed_total"
    for step in ("start", "notify_email", "notify_slack", "notify_sms", "complete"):
        assert value(samples, executed, workflow="notifications", step=step) == 1
        count = "django_workflows_step_duration_seconds_count"
        assert value(samples, count, workflow="notifications", step=step) == 1
    # Attempt 1 raised and was retried, attempt 2 completed; both were measured.
    by_payment = {"workflow": "retrying", "step": "process_payment"}
    assert value(samples, "django_workflows_steps_retried_total", **by_payment) == 1
    assert value(samples, executed, **by_payment) == 1
    assert value(samples, "django_workflows_step_duration_seconds_count", **by_payment) == 2
    assert value(samples, "django_workflows_steps_failed_total", **by_payment) == 0
    # Runs claimed from the (local) queue are measured: the parallel branches but one
    # (claimed by the transition that created it), and a retry. The first step, claimed
    # by the start's own transaction, and the join, claimed by the last branch's
    # transition, waited in no queue.
    delay = "django_workflows_queue_delay_seconds_count"
    assert value(samples, delay, workflow="notifications", step="start") == 0
    assert value(samples, delay, workflow="notifications", step="complete") == 0
    branches = sum(
        value(samples, delay, workflow="notifications", step=s)
        for s in ("notify_email", "notify_slack", "notify_sms")
    )
    assert branches == 2
    assert value(samples, delay, **by_payment) == 1
    assert value(samples, "django_workflows_step_duration_seconds_sum", **by_payment) > 0


def test_a_failure_and_the_wait_of_a_human_task(
    client, engine, manager, django_capture_on_commit_callbacks
):
    with own_registry():
        with django_capture_on_commit_callbacks(execute=True):
            instance = engine.start_workflow("expense", initial_data={"amount": 5})
            # The task was opened two hours ago.
            HumanTask.objects.filter(instance=instance).update(
                created_at=F("created_at") - timedelta(hours=2)
            )
            instance = engine.complete_human_task(
                instance.pk, "manager_approval", manager, {"approved": True}
            )
        samples = scrape(client)

    assert instance.status == WorkflowStatus.FAILED  # process_payment raises
    payment = {"workflow": "expense", "step": "process_payment"}
    assert value(samples, "django_workflows_steps_failed_total", **payment) == 1
    assert value(samples, "django_workflows_instances_failed_total", workflow="expense") == 1
    wait = {"workflow": "expense", "step": "manager_approval"}
    assert value(samples, "django_workflows_human_task_wait_seconds_count", **wait) == 1
    waited = value(samples, "django_workflows_human_task_wait_seconds_sum", **wait)
    assert 7200 <= waited < 7300
    bucket = "django_workflows_human_task_wait_seconds_bucket"
    assert value(samples, bucket, le="3600.0", **wait) == 0
    assert value(samples, bucket, le="14400.0", **wait) == 1


def test_a_crashed_worker_is_counted(client, django_capture_on_commit_callbacks):
    reg = WorkflowRegistry()
    reg.register_definition(workflows.parallel_notifications())
    worker = InProcessWorker(reg)
    with own_registry():
        with django_capture_on_commit_callbacks(execute=True):
            instance = worker.start_workflow("notifications")
            run_id = worker.queued.pop(0)
            assert worker.claim(run_id) is not None  # ... and the worker dies mid-step
            StepRun.objects.filter(pk=run_id).update(
                lease_expires_at=timezone.now() - timedelta(minutes=1)
            )
            assert worker.recover_expired_leases() == 1
        samples = scrape(client)

    start = {"workflow": "notifications", "step": "start"}
    assert instance.current_step == "start"
    assert value(samples, "django_workflows_steps_crashed_total", **start) == 1
    assert value(samples, "django_workflows_steps_retried_total", **start) == 1  # re-queued
    assert value(samples, "django_workflows_steps_failed_total", **start) == 0


def test_gauges_are_read_from_the_database_when_scraped(
    client, engine, django_capture_on_commit_callbacks
):
    reg = WorkflowRegistry()
    reg.register_definition(workflows.parallel_notifications())
    worker = InProcessWorker(reg)
    with own_registry():
        empty = scrape(client)
        with django_capture_on_commit_callbacks(execute=True):
            waiting = [engine.start_workflow("expense", initial_data={"n": i}) for i in range(3)]
            worker.start_workflow("notifications")  # its first step waits in the queue
            worker.start_workflow("notifications")
        HumanTask.objects.filter(instance=waiting[0]).update(
            due_at=timezone.now() - timedelta(hours=1)
        )
        StepRun.objects.filter(status="queued").update(
            queued_at=timezone.now() - timedelta(minutes=5)
        )
        samples = scrape(client)

    assert value(empty, "django_workflows_queued_runs") == 0
    # No task open: the gauge stays, as its group="" (no candidate group) sample at 0.
    assert empty[("django_workflows_open_tasks", ("group", ""))] == 0
    assert [k for k in empty if k[0] == "django_workflows_open_tasks"] == [
        ("django_workflows_open_tasks", ("group", ""))
    ]
    assert samples[("django_workflows_open_tasks", ("group", ""))] == 0
    assert value(empty, "django_workflows_oldest_queued_run_age_seconds") == 0
    assert value(samples, "django_workflows_open_tasks", group="managers") == 3
    assert value(samples, "django_workflows_overdue_tasks") == 1
    assert value(samples, "django_workflows_instances", workflow="expense", status="waiting") == 3
    running = {"workflow": "notifications", "status": "running"}
    assert value(samples, "django_workflows_instances", **running) == 2
    assert value(samples, "django_workflows_queued_runs") == 2
    assert 300 <= value(samples, "django_workflows_oldest_queued_run_age_seconds") < 400


def test_metrics_live_in_the_default_registry_unless_a_setting_names_another(
    engine, django_capture_on_commit_callbacks
):
    name = "django_workflows_instances_started_total"
    labels = {"workflow": "notifications"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    with workflow_settings(), django_capture_on_commit_callbacks(execute=True):
        engine.start_workflow("notifications")
    assert REGISTRY.get_sample_value(name, labels) == before + 1
    with own_registry() as registry, django_capture_on_commit_callbacks(execute=True):
        engine.start_workflow("notifications")
    assert REGISTRY.get_sample_value(name, labels) == before + 1
    assert registry.get_sample_value(name, labels) == 1


def test_the_view_is_guarded(client):
    with own_registry():
        assert client.get("/metrics").status_code == 403
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
        assert client.get("/metrics", **AUTH).status_code == 200
    # The test client comes from 127.0.0.1.
    with own_registry(METRICS_TOKEN=None, METRICS_NETWORKS=["10.0.0.0/8"]):
        assert client.get("/metrics").status_code == 403
    with own_registry(METRICS_TOKEN=None, METRICS_NETWORKS=["10.0.0.0/8", "127.0.0.1"]):
        assert client.get("/metrics").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="192.168.1.1").status_code == 403
    with workflow_settings():  # nothing configured: nobody
        response = client.get("/metrics")
        assert response.status_code == 403
        assert b"METRICS_TOKEN" in response.content


def test_metrics_off(client, engine, django_capture_on_commit_callbacks):
    with own_registry(METRICS=False) as registry:
        with django_capture_on_commit_callbacks(execute=True):
            engine.start_workflow("notifications")
        response = client.get("/metrics", **AUTH)
    assert response.status_code == 503
    assert b"METRICS" in response.content
    assert registry.get_sample_value("django_workflows_instances_started_total") is None


# -- a bad METRICS_REGISTRY ----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["no.such.Registry", 42])
def test_a_bad_registry_is_a_check_error_and_turns_metrics_off(
    bad, client, engine, caplog, django_capture_on_commit_callbacks
):
    from django_workflows import metrics, tracing
    from django_workflows.checks import check_settings

    metrics._broken.clear()
    with workflow_settings(METRICS_REGISTRY=bad, METRICS_TOKEN="s3cret"):
        [error] = [e for e in check_settings() if e.id == "django_workflows.E006"]
        assert "METRICS_REGISTRY" in error.msg and repr(bad) in error.msg
        tracing.reset()
        try:
            with caplog.at_level("ERROR", logger="django_workflows.metrics"):
                with django_capture_on_commit_callbacks(execute=True):
                    first = engine.start_workflow("notifications")
                    second = engine.start_workflow("notifications")
                response = client.get("/metrics", **AUTH)
        finally:
            tracing.reset()
    # The engine keeps running; the failure is logged once; the view says why.
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == WorkflowStatus.COMPLETED
    logged = [r for r in caplog.records if "METRICS_REGISTRY" in r.getMessage()]
    assert len(logged) == 1
    assert response.status_code == 503
    assert b"METRICS_REGISTRY" in response.content


def test_a_valid_registry_passes_the_check():
    from django_workflows.checks import check_settings

    for good in (None, "prometheus_client.REGISTRY"):
        with workflow_settings(METRICS_REGISTRY=good):
            assert [e for e in check_settings() if e.id == "django_workflows.E006"] == []
    with own_registry():
        assert [e for e in check_settings() if e.id == "django_workflows.E006"] == []


# -- a bad METRICS_NETWORKS ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "text"),
    [(["not-a-net"], "'not-a-net' is not an address"), ("127.0.0.1", "is not a list")],
)
def test_bad_networks_are_a_check_error_and_the_view_denies(bad, text, client, caplog):
    from django_workflows.checks import check_settings

    with own_registry(METRICS_TOKEN=None, METRICS_NETWORKS=bad):
        [error] = [e for e in check_settings() if e.id == "django_workflows.E007"]
        with caplog.at_level("ERROR", logger="django_workflows.metrics"):
            response = client.get("/metrics")
    assert text in error.msg
    assert response.status_code == 403
    assert any("METRICS_NETWORKS" in r.getMessage() for r in caplog.records)
    # A token still works.
    with own_registry(METRICS_NETWORKS=bad):
        assert client.get("/metrics", **AUTH).status_code == 200


def test_valid_networks_pass_the_check():
    from django_workflows.checks import check_settings

    for good in ([], ["10.0.0.0/8", "127.0.0.1", "::1", "10.1.2.3/8"]):
        with workflow_settings(METRICS_NETWORKS=good):
            assert [e for e in check_settings() if e.id == "django_workflows.E007"] == []


@pytest.mark.parametrize(
    "header",
    ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer   s3cret", " beArer s3cret"],
)
def test_the_bearer_scheme_is_case_insensitive(client, header):
    with own_registry():
        assert client.get("/metrics", HTTP_AUTHORIZATION=header).status_code == 200
        wrong = header.replace("s3cret", "wrong")
        assert client.get("/metrics", HTTP_AUTHORIZATION=wrong).status_code == 403
        assert client.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret").status_code == 403
