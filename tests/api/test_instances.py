"""Instances: start, list (filters, pagination, ordering), detail, cancel, retry."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import resolve
from django.utils import timezone

from django_workflows import WorkflowStatus
from django_workflows.models import HumanTask, StepRun, WorkflowEvent, WorkflowInstance

from .. import workflows
from ..factories import StaffFactory
from .conftest import API

pytestmark = pytest.mark.django_db

INSTANCES = f"{API}/instances/"


def start(client, **body):
    return client.post(INSTANCES, body, format="json")


# -- start -------------------------------------------------------------------------


def test_start_returns_201_with_the_instance_run_as_far_as_it_goes(client_for, starter, managers):
    response = start(client_for(starter), workflow="expense", data={"amount": 12})

    assert response.status_code == 201, response.json()
    body = response.json()
    instance = WorkflowInstance.objects.get()
    assert body["id"] == str(instance.pk)
    assert response["Location"].endswith(f"{INSTANCES}{instance.pk}/")
    assert (body["workflow"], body["version"], body["status"]) == ("expense", "1.0.0", "waiting")
    assert body["started_by"] == starter.pk
    assert body["context"] == {"amount": 12, "submit_done": True}
    assert body["current_steps"] == ["manager_approval"]
    assert [t["step_name"] for t in body["open_tasks"]] == ["manager_approval"]
    assert body["events"][0]["type"] == "WorkflowStarted"
    assert instance.started_by == starter


def test_start_a_machine_only_workflow_completes_it(client_for, starter):
    response = start(client_for(starter), workflow="notifications")

    assert response.status_code == 201
    assert response.json()["status"] == "completed"
    assert response.json()["finished_at"] is not None


def test_start_a_given_version(client_for, starter, wf_registry):
    wf_registry.register_definition(workflows.expense_approval("2.0.0"))
    client = client_for(starter)

    assert start(client, workflow="expense").json()["version"] == "2.0.0"
    assert start(client, workflow="expense", version="1.0.0").json()["version"] == "1.0.0"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "workflow", "This field is required."),
        ({"workflow": "nope"}, "workflow", "no workflow named 'nope' is registered"),
        ({"workflow": "expense", "version": "9"}, "version", "has no version '9'"),
        ({"workflow": "expense", "data": [1]}, "data", "Expected a dictionary of items"),
        ({"workflow": "expense", "data": "x"}, "data", "Expected a dictionary of items"),
        ({"workflow": "expense", "data": {"a": "x\x00"}}, "data", "NUL"),
        ({"workflow": "expense", "business_key": "k" * 201}, "business_key", "200 characters"),
        ({"workflow": 5}, "workflow", "no workflow named '5'"),
    ],
)
def test_start_with_invalid_input_is_400_with_field_errors_and_starts_nothing(
    client_for, starter, body, field, message
):
    response = start(client_for(starter), **body)

    assert response.status_code == 400, response.json()
    error = response.json()
    assert error["code"] == "invalid"
    assert message in str(error["errors"][field]), error
    assert message in error["detail"]
    assert not WorkflowInstance.objects.exists()
    assert not WorkflowEvent.objects.exists()


# -- idempotent start by business key ---------------------------------------------


def test_repeated_start_with_a_business_key_returns_the_first_instance(client_for, starter):
    client = client_for(starter)
    first = start(client, workflow="expense", business_key="order-7", data={"amount": 1})
    again = start(client, workflow="expense", business_key="order-7", data={"amount": 2})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["context"]["amount"] == 1
    assert WorkflowInstance.objects.count() == 1


def test_business_key_idempotency_is_per_user_and_workflow(client_for, starter, outsider):
    ids = {
        start(client_for(starter), workflow="expense", business_key="k").json()["id"],
        start(client_for(outsider), workflow="expense", business_key="k").json()["id"],
        start(client_for(starter), workflow="notifications", business_key="k").json()["id"],
    }
    assert len(ids) == 3
    assert WorkflowInstance.objects.count() == 3


def test_without_business_key_every_start_is_new(client_for, starter):
    client = client_for(starter)
    statuses = [start(client, workflow="notifications").status_code for _ in range(2)]

    assert statuses == [201, 201]
    assert WorkflowInstance.objects.count() == 2


# -- list ------------------------------------------------------------------------


@pytest.fixture
def several(api_engine, superuser, starter, outsider):
    """Instances in several states, by two users, with business keys."""
    made = {
        "waiting": api_engine.start_workflow(
            "expense", initial_data={"amount": 1}, started_by=starter, business_key="a"
        ),
        "completed": api_engine.start_workflow(
            "notifications", started_by=starter, business_key="b"
        ),
        "other": api_engine.start_workflow(
            "review", initial_data={"score": 90}, started_by=outsider
        ),
    }
    return made


def ids(response):
    assert response.status_code == 200, response.json()
    return {item["id"] for item in response.json()["results"]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"waiting", "completed", "other"}),
        ("?status=waiting", {"waiting"}),
        ("?status=completed", {"completed", "other"}),
        ("?workflow=notifications", {"completed"}),
        ("?workflow=expense&version=1.0.0", {"waiting"}),
        ("?version=2", set()),
        ("?business_key=b", {"completed"}),
        ("?started_by=me", set()),
        ("?workflow=nope", set()),
    ],
)
def test_list_filters(client_for, superuser, several, query, expected):
    response = client_for(superuser).get(INSTANCES + query)

    assert ids(response) == {str(several[name].pk) for name in expected}


def test_list_filters_by_starter_id_and_me(client_for, starter, outsider, superuser, several):
    client = client_for(superuser)

    assert ids(client.get(f"{INSTANCES}?started_by={outsider.pk}")) == {str(several["other"].pk)}
    assert ids(client_for(starter).get(f"{INSTANCES}?started_by=me")) == {
        str(several["waiting"].pk),
        str(several["completed"].pk),
    }


def test_list_filters_by_start_time_dates_and_datetimes(client_for, superuser, several):
    old = several["other"]
    WorkflowInstance.objects.filter(pk=old.pk).update(
        started_at=timezone.now() - timedelta(days=10)
    )
    client = client_for(superuser)
    today = timezone.now().date().isoformat()
    cutoff = (timezone.now() - timedelta(days=5)).isoformat().replace("+00:00", "Z")

    assert ids(client.get(f"{INSTANCES}?started_before={today}")) == {str(old.pk)}
    assert str(old.pk) not in ids(client.get(f"{INSTANCES}?started_after={today}"))
    assert len(ids(client.get(f"{INSTANCES}?started_after={today}"))) == 2
    assert ids(client.get(INSTANCES, {"started_before": cutoff})) == {str(old.pk)}
    assert str(old.pk) not in ids(client.get(INSTANCES, {"started_after": cutoff}))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?status=sleeping", "status"),
        ("?started_after=yesterday", "started_after"),
        ("?started_before=2024-13-01", "started_before"),
        ("?started_by=bob", "started_by"),
        ("?started_by=1.5", "started_by"),
        ("?business_key=%00", "business_key"),
    ],
)
def test_list_with_invalid_filters_is_400(client_for, superuser, query, field):
    response = client_for(superuser).get(INSTANCES + query)

    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_list_paginates_by_limit_and_offset_newest_first(client_for, starter, api_engine):
    made = [api_engine.start_workflow("notifications", started_by=starter) for _ in range(5)]
    for age, instance in enumerate(made):  # made[0] oldest
        WorkflowInstance.objects.filter(pk=instance.pk).update(
            started_at=timezone.now() - timedelta(minutes=10 - age)
        )
    client = client_for(starter)

    page = client.get(INSTANCES, {"limit": 2, "offset": 1}).json()

    assert page["count"] == 5
    assert [item["id"] for item in page["results"]] == [str(made[3].pk), str(made[2].pk)]
    assert "offset=3" in page["next"] and "offset" not in page["previous"]
    assert len(client.get(INSTANCES).json()["results"]) == 5
    oldest_first = client.get(INSTANCES, {"ordering": "started_at"}).json()["results"]
    assert [item["id"] for item in oldest_first] == [str(i.pk) for i in made]


# -- detail -----------------------------------------------------------------------


def test_detail_has_context_step_runs_open_tasks_and_history(client_for, starter, expense):
    body = client_for(starter).get(f"{INSTANCES}{expense.pk}/").json()

    assert body["context"] == {"amount": 5, "submit_done": True}
    assert [(r["step_name"], r["status"]) for r in body["step_runs"]] == [
        ("submit", "completed"),
        ("manager_approval", "waiting"),
    ]
    assert [t["id"] for t in body["open_tasks"]] == [expense.human_tasks.get().pk]
    assert [e["type"] for e in body["events"]] == list(
        expense.events.order_by("id").values_list("type", flat=True)
    )
    assert body["events"][0]["payload"] == {"user_id": starter.pk, "business_key": ""}


def test_detail_lists_only_open_tasks(client_for, starter, manager, expense, task, api_engine):
    api_engine.complete_task(task.pk, manager, {"approved": False})

    body = client_for(starter).get(f"{INSTANCES}{expense.pk}/").json()

    assert body["status"] == "completed"
    assert body["open_tasks"] == []


# -- cancel -----------------------------------------------------------------------


def test_starter_cancels_with_a_reason(client_for, starter, expense, task):
    response = client_for(starter).post(
        f"{INSTANCES}{expense.pk}/cancel/", {"reason": "duplicate"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "canceled"
    assert response.json()["open_tasks"] == []
    assert HumanTask.objects.get(pk=task.pk).status == "canceled"
    assert expense.events.get(type="WorkflowCanceled").payload["reason"] == "duplicate"


def test_an_operator_cancels_any_instance_without_a_body(client_for, expense):
    operator = StaffFactory()
    operator.user_permissions.add(Permission.objects.get(codename="change_workflowinstance"))

    response = client_for(operator).post(f"{INSTANCES}{expense.pk}/cancel/")

    assert response.status_code == 200
    assert WorkflowInstance.objects.get(pk=expense.pk).status == WorkflowStatus.CANCELED


def test_cancel_of_a_finished_instance_is_409(client_for, starter, expense):
    client = client_for(starter)
    client.post(f"{INSTANCES}{expense.pk}/cancel/")

    response = client.post(f"{INSTANCES}{expense.pk}/cancel/")

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"instance {expense.pk} is already canceled",
        "code": "conflict",
    }
    assert expense.events.filter(type="WorkflowCanceled").count() == 1


def test_a_task_holder_who_did_not_start_it_may_not_cancel(client_for, manager, expense):
    response = client_for(manager).post(f"{INSTANCES}{expense.pk}/cancel/")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "started the instance" in response.json()["detail"]
    assert WorkflowInstance.objects.get(pk=expense.pk).status == WorkflowStatus.WAITING


def test_cancel_reason_too_long_is_400_and_cancels_nothing(client_for, starter, expense):
    response = client_for(starter).post(
        f"{INSTANCES}{expense.pk}/cancel/", {"reason": "x" * 1001}, format="json"
    )

    assert response.status_code == 400
    assert "reason" in response.json()["errors"]
    assert WorkflowInstance.objects.get(pk=expense.pk).status == WorkflowStatus.WAITING


# -- retry ------------------------------------------------------------------------


@pytest.fixture
def failed(expense, task, manager, api_engine):
    """The expense approved: its payment step failed."""
    instance = api_engine.complete_task(task.pk, manager, {"approved": True})
    assert instance.status == WorkflowStatus.FAILED
    return instance


def test_starter_retries_a_failed_instance(client_for, starter, failed):
    workflows.FAIL_SWITCH["on"] = False

    response = client_for(starter).post(f"{INSTANCES}{failed.pk}/retry/")

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "completed"
    assert response.json()["context"]["payment"] == "ok"
    assert failed.events.filter(type="WorkflowRetried").count() == 1


def test_retry_from_a_given_step(client_for, starter, failed):
    response = client_for(starter).post(
        f"{INSTANCES}{failed.pk}/retry/", {"from_step": "reject"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert failed.events.get(type="WorkflowRetried").step_name == "reject"


def test_retry_from_an_unknown_step_is_400_and_changes_nothing(client_for, starter, failed):
    response = client_for(starter).post(
        f"{INSTANCES}{failed.pk}/retry/", {"from_step": "nope"}, format="json"
    )

    assert response.status_code == 400
    assert "has no step 'nope'" in response.json()["errors"]["from_step"][0]
    assert WorkflowInstance.objects.get(pk=failed.pk).status == WorkflowStatus.FAILED
    assert not failed.events.filter(type="WorkflowRetried").exists()


def test_retry_of_an_instance_that_has_not_failed_is_409(client_for, starter, expense):
    response = client_for(starter).post(f"{INSTANCES}{expense.pk}/retry/")

    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert "only a failed instance is retried" in response.json()["detail"]


def test_a_task_holder_who_did_not_start_it_may_not_retry(client_for, manager, failed):
    response = client_for(manager).post(f"{INSTANCES}{failed.pk}/retry/")

    assert response.status_code == 403
    assert WorkflowInstance.objects.get(pk=failed.pk).status == WorkflowStatus.FAILED


def test_retry_when_the_definition_is_no_longer_registered_is_409(
    client_for, starter, failed, wf_registry
):
    wf_registry.unregister("expense")

    response = client_for(starter).post(f"{INSTANCES}{failed.pk}/retry/")

    assert response.status_code == 409
    assert response.json()["code"] == "definition_error"
    assert "no workflow named 'expense' is registered" in response.json()["detail"]
    assert StepRun.objects.filter(instance=failed, status="failed").count() == 1


def test_unknown_and_malformed_instance_ids_are_404(client_for, superuser):
    client = client_for(superuser)
    for path in (f"{uuid.uuid4()}/", "not-a-uuid/", "1/", "0.5/", "%00/"):
        for method, suffix in (("get", ""), ("post", "cancel/"), ("post", "retry/")):
            response = getattr(client, method)(INSTANCES + path + suffix)
            assert response.status_code == 404, (path, suffix)
            assert response.json()["code"] == "not_found"
            assert "no workflow instance with id" in response.json()["detail"]


@pytest.mark.parametrize("path", [INSTANCES, f"{API}/tasks/", f"{API}/tasks/1/complete/"])
def test_views_that_call_the_engine_opt_out_of_atomic_requests(path):
    # Each engine call commits its own transaction; a request-wide one would hold them.
    assert resolve(path).func._non_atomic_requests == {"default"}


def test_the_count_stops_past_the_page_and_says_so(client_for, starter, api_engine, monkeypatch):
    from django_workflows.api.filters import Pagination

    monkeypatch.setattr(Pagination, "count_limit", 2)
    made = [api_engine.start_workflow("notifications", started_by=starter) for _ in range(7)]
    client = client_for(starter)

    first = client.get(INSTANCES, {"limit": 2}).json()
    near_end = client.get(INSTANCES, {"limit": 2, "offset": 4}).json()
    last = client.get(INSTANCES, {"limit": 2, "offset": 6}).json()

    assert (first["count"], first["count_is_exact"]) == (4, False)  # at least 4
    assert "offset=2" in first["next"]
    assert (near_end["count"], near_end["count_is_exact"]) == (7, True)
    assert len(near_end["results"]) == 2 and "offset=6" in near_end["next"]
    assert (last["count"], last["count_is_exact"], last["next"]) == (7, True, None)
    assert len(last["results"]) == 1
    seen = [item["id"] for page in (first, near_end, last) for item in page["results"]]
    assert len(set(seen)) == 5 and set(seen) <= {str(i.pk) for i in made}
