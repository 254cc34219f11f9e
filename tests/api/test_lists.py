"""The list endpoints write their rows directly (``django_workflows.api.lists``): the
same JSON as their serializers, key for key, on varied rows."""

import datetime
import json
import zoneinfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from django_workflows.api.serializers import InstanceSerializer, TaskSerializer
from django_workflows.models import (
    HumanTask,
    HumanTaskGroup,
    TaskStatus,
    WorkflowInstance,
    WorkflowStatus,
)

from ..factories import UserFactory
from .conftest import API


def rendered(data):
    """As a client reads it: keys in order, UUIDs and datetimes as DRF renders them."""
    return json.loads(JSONRenderer().render(data))


def items(rows):
    return [list(row.items()) for row in rows]


@pytest.fixture
def varied(api_engine, superuser, manager):
    """Instances and tasks with every kind of value the lists show."""
    other = UserFactory(username="other")
    started = [
        api_engine.start_workflow(
            "approval", initial_data={"assignee": manager.pk}, business_key=key, started_by=by
        )
        for key, by in [("", superuser), ("PO-1", None), ("PO-2", manager), ("", other)]
    ]
    tasks = list(HumanTask.objects.filter(instance__in=started).order_by("created_at"))
    due = datetime.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
    # Offered to groups (unsorted names), due with microseconds, no assignee.
    first = tasks[0]
    first.assignee, first.due_at = None, due
    first.save()
    for name in ("zeta", "managers", "alpha"):
        HumanTaskGroup.objects.create(task=first, name=name)
    # Completed on behalf of someone, with a result; its instance finished.
    second = tasks[1]
    second.status, second.completed_by, second.completed_on_behalf_of = (
        TaskStatus.COMPLETED,
        manager,
        other,
    )
    second.completed_at = due.replace(microsecond=0)
    second.result = {"approved": True, "items": [1, {"a": None}], "note": "é"}
    second.close_reason, second.slot = "completion reached", 2
    second.save()
    finished = started[1]
    finished.status, finished.finished_at, finished.current_steps = (
        WorkflowStatus.COMPLETED,
        due,
        [],
    )
    finished.save()
    # Claimed, one group; its instance failed with an error.
    third = tasks[2]
    third.claimed_by, third.status, third.close_reason = other, TaskStatus.CANCELED, "vetoed"
    third.save()
    HumanTaskGroup.objects.create(task=third, name="managers")
    failed = started[2]
    failed.status, failed.failed_step, failed.error = WorkflowStatus.FAILED, "decide", "Boom: x"
    failed.current_steps = ["decide", "done"]
    failed.save()
    return started, tasks


@pytest.mark.parametrize("zone", [None, "America/New_York"])
def test_the_task_list_is_the_serializers_output(client_for, superuser, varied, zone):
    with timezone.override(zoneinfo.ZoneInfo(zone)) if zone else timezone.override(None):
        response = client_for(superuser).get(f"{API}/tasks/", {"all": 1})
        assert response.status_code == 200
        rows = HumanTask.objects.select_related("instance__definition").order_by(
            "-created_at", "-pk"
        )
        expected = rendered(
            TaskSerializer(rows.prefetch_related("candidate_groups"), many=True).data
        )
    results = response.json()["results"]
    assert len(results) == 4
    assert items(results) == items(expected)
    by_id = {row["id"]: row for row in results}
    assert by_id[varied[1][0].pk]["candidate_groups"] == ["alpha", "managers", "zeta"]


@pytest.mark.parametrize("zone", [None, "Asia/Kolkata"])
def test_the_instance_list_is_the_serializers_output(client_for, superuser, varied, zone):
    with timezone.override(zoneinfo.ZoneInfo(zone)) if zone else timezone.override(None):
        response = client_for(superuser).get(f"{API}/instances/")
        assert response.status_code == 200
        rows = WorkflowInstance.objects.select_related("definition").order_by("-started_at", "-pk")
        expected = rendered(InstanceSerializer(rows, many=True).data)
    results = response.json()["results"]
    assert len(results) == 4
    assert items(results) == items(expected)


def test_the_inbox_is_the_serializers_output_and_reads_the_page_in_three_statements(
    client_for, manager, varied
):
    client = client_for(manager)
    client.get(f"{API}/tasks/")  # the session and permission caches aside
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"{API}/tasks/")
    results = response.json()["results"]
    rows = HumanTask.objects.filter(pk__in=[row["id"] for row in results]).order_by(
        "-created_at", "-pk"
    )
    assert items(results) == items(rendered(TaskSerializer(rows, many=True).data))
    assert {row["id"] for row in results} == {varied[1][0].pk, varied[1][3].pk}
    sql = [q["sql"] for q in queries.captured_queries]
    pages = [s for s in sql if "django_workflows_humantask" in s]
    # The count, the page, the page's candidate groups; the count joins nothing.
    assert len(pages) == 3
    assert "JOIN" not in pages[0]


def test_an_empty_page_reads_no_candidate_groups(client_for, outsider):
    with CaptureQueriesContext(connection) as queries:
        response = client_for(outsider).get(f"{API}/tasks/")
    assert response.json()["results"] == []
    groups = 'SELECT "django_workflows_humantaskgroup"'
    assert not [q for q in queries.captured_queries if q["sql"].startswith(groups)]


def test_a_datetime_format_of_the_project_is_kept(client_for, superuser, varied, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DATETIME_FORMAT": "%d.%m.%Y %H:%M"}
    client = client_for(superuser)
    tasks = client.get(f"{API}/tasks/", {"all": 1}).json()["results"]
    instances = client.get(f"{API}/instances/").json()["results"]
    rows = HumanTask.objects.order_by("-created_at", "-pk")
    assert items(tasks) == items(rendered(TaskSerializer(rows, many=True).data))
    rows = WorkflowInstance.objects.order_by("-started_at", "-pk")
    assert items(instances) == items(rendered(InstanceSerializer(rows, many=True).data))
    assert tasks[-1]["due_at"] == "06.05.2030 07:08"


def test_a_subclass_with_a_paginator_of_its_own_lists_through_the_serializer(superuser, varied):
    from rest_framework.pagination import PageNumberPagination
    from rest_framework.test import APIRequestFactory, force_authenticate

    from django_workflows.api.views import TaskViewSet

    class Paged(PageNumberPagination):
        page_size = 10

    class OwnPages(TaskViewSet):
        pagination_class = Paged

    request = APIRequestFactory().get(f"{API}/tasks/", {"all": 1})
    force_authenticate(request, user=superuser)
    response = OwnPages.as_view({"get": "list"})(request)
    response.render()
    rows = HumanTask.objects.order_by("-created_at", "-pk")
    results = json.loads(response.content)["results"]
    assert items(results) == items(rendered(TaskSerializer(rows, many=True).data))
