"""List endpoints run a constant number of queries, however many rows they show."""

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ..factories import StaffFactory
from .conftest import API

pytestmark = pytest.mark.django_db


def queries(client, url, **params):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
    assert response.status_code == 200, response.json()
    return len(captured), response.json()


def start_expenses(engine, user, count):
    for _ in range(count):
        engine.start_workflow("expense", initial_data={"amount": 1}, started_by=user)


def rows(body):
    return body["results"] if isinstance(body, dict) else body


@pytest.mark.parametrize(
    ("who", "url", "params"),
    [
        ("starter", "/instances/", {}),
        ("viewer", "/instances/", {"status": "waiting"}),
        ("manager", "/instances/", {"ordering": "-updated_at"}),
        ("manager", "/tasks/", {}),
        ("starter", "/tasks/", {"all": 1}),
        ("viewer", "/tasks/", {"all": 1, "workflow": "expense"}),
        ("superuser", "/tasks/", {}),
    ],
)
def test_list_queries_do_not_grow_with_rows(
    client_for, api_engine, starter, manager, superuser, who, url, params
):
    users = {
        "starter": starter,
        "manager": manager,
        "viewer": StaffFactory(),
        "superuser": superuser,
    }
    users["viewer"].user_permissions.add(
        *Permission.objects.filter(codename__in=["view_workflowinstance", "view_humantask"])
    )
    client = client_for(users[who])

    start_expenses(api_engine, starter, 3)
    few, body = queries(client, API + url, **params)
    assert len(rows(body)) == 3
    start_expenses(api_engine, starter, 27)
    many, body = queries(client, API + url, **params)
    assert len(rows(body)) == 30

    assert many == few
    # session, user, permissions (the user's, their groups'), group names, count, page,
    # (candidate groups of the tasks)
    assert few <= 8


def test_definitions_list_queries_do_not_grow_with_stored_versions(
    client_for, starter, api_engine, wf_registry
):
    from .. import workflows

    client = client_for(starter)
    api_engine.start_workflow("notifications")
    few, _ = queries(client, f"{API}/definitions/")
    for version in ("2", "3", "4"):
        wf_registry.register_definition(workflows.expense_approval(version))
        api_engine.start_workflow("expense", version=version, initial_data={"amount": 1})
    many, body = queries(client, f"{API}/definitions/")

    expense = next(item for item in body if item["name"] == "expense")
    assert [v["version"] for v in expense["versions"]] == ["1.0.0", "2", "3", "4"]
    assert many == few


def test_instance_detail_queries_do_not_grow_with_runs_and_events(
    client_for, api_engine, starter, superuser
):
    client = client_for(starter)
    short = api_engine.start_workflow("rework", started_by=starter)
    long = api_engine.start_workflow("rework", started_by=starter)
    for _ in range(5):  # rejected: back to the draft, and a new review task
        task = long.human_tasks.get(status="open")
        api_engine.complete_task(task.pk, superuser, {"approved": False})

    few, body = queries(client, f"{API}/instances/{short.pk}/")
    assert len(body["step_runs"]) == 2 and len(body["open_tasks"]) == 1
    many, body = queries(client, f"{API}/instances/{long.pk}/")
    assert len(body["step_runs"]) == 12 and len(body["open_tasks"]) == 1

    assert many == few


@pytest.mark.parametrize(
    ("who", "url", "params"),
    [
        ("starter", "/instances/", {}),
        ("viewer", "/instances/", {}),
        ("manager", "/tasks/", {}),
        ("viewer", "/tasks/", {"all": 1}),
    ],
)
def test_list_counts_stop_at_a_bound(client_for, api_engine, starter, manager, who, url, params):
    """No list counts a whole table: its count is a COUNT(*) of a LIMIT-ed subquery
    (``paging.bounded_count``), on every database."""
    viewer = StaffFactory()
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_workflowinstance", "view_humantask"])
    )
    client = client_for({"starter": starter, "manager": manager, "viewer": viewer}[who])
    start_expenses(api_engine, starter, 3)

    with CaptureQueriesContext(connection) as captured:
        response = client.get(API + url, params)

    assert response.status_code == 200 and response.json()["count"] == 3
    counts = [q["sql"] for q in captured if "COUNT(" in q["sql"].upper()]
    assert counts, "the page counts its rows"
    assert all("LIMIT 1051" in sql for sql in counts), counts
