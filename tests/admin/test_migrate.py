"""The instance list's "Migrate to another version…" action: preview, confirm, who may."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.urls import reverse

from django_workflows.models import HumanTask, WorkflowEvent, WorkflowInstance

from ..engine.test_migration import payment_v1, payment_v2
from ..factories import StaffFactory
from .conftest import grant

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:django_workflows_workflowinstance_changelist")


@pytest.fixture
def started(admin_engine):
    admin_engine.registry.register_definition(payment_v1("billing"))
    waiting = [admin_engine.start_workflow("billing") for _ in range(2)]
    reviewed = admin_engine.start_workflow("billing", initial_data={"kind": "review"})
    admin_engine.registry.register_definition(payment_v2("billing"))
    return waiting, reviewed


def texts(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def versions():
    return sorted(WorkflowInstance.objects.values_list("definition__version", flat=True))


def post(client, ids, **extra):
    data = {"action": "migrate_instances", "_selected_action": [str(i) for i in ids], **extra}
    return client.post(CHANGELIST, data)


def test_the_preview_shows_the_plan_and_changes_nothing(admin_client, started):
    waiting, reviewed = started
    page = post(admin_client, [*(w.pk for w in waiting), reviewed.pk], index=0)

    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="to_version"' in html and 'name="map__review"' in html
    assert "The plan: to 2.0.0, 2 movable, 1 blocked" in html
    assert "step &#x27;review&#x27; removed in 2.0.0 and not mapped" in html
    assert versions() == ["1.0.0"] * 3


def test_preview_with_a_map_then_migrate(admin_client, started):
    waiting, reviewed = started
    ids = [*(w.pk for w in waiting), reviewed.pk]
    preview = post(admin_client, ids, post="preview", to_version="2.0.0", map__review="approval")
    assert "3 movable, 0 blocked" in preview.content.decode()

    done = post(admin_client, ids, post="yes", to_version="2.0.0", map__review="approval")

    assert done.status_code == 302
    assert versions() == ["2.0.0"] * 3
    assert sum("was migrated to 2.0.0" in m for m in texts(done)) == 3
    assert WorkflowEvent.objects.filter(type="InstanceMigrated").count() == 3
    assert HumanTask.objects.get(instance=reviewed).step_name == "approval"
    assert LogEntry.objects.filter(change_message="Migrated from 1.0.0 to 2.0.0").count() == 3


def test_blocked_instances_are_reported_and_left(admin_client, started):
    waiting, reviewed = started
    done = post(admin_client, [waiting[0].pk, reviewed.pk], post="yes", to_version="2.0.0")
    assert done.status_code == 302
    messages = texts(done)
    assert any("was not migrated: step" in m and "removed in 2.0.0" in m for m in messages)
    assert WorkflowInstance.objects.get(pk=reviewed.pk).definition.version == "1.0.0"
    assert WorkflowInstance.objects.get(pk=waiting[0].pk).definition.version == "2.0.0"


def test_a_bad_version_or_map_is_a_form_error(admin_client, started):
    waiting, _ = started
    page = post(admin_client, [waiting[0].pk], post="yes", to_version="9", map__approval="nope")
    assert page.status_code == 200
    assert page.context["form"].errors
    assert versions() == ["1.0.0"] * 3


def test_instances_of_several_versions_are_refused(admin_client, started, admin_engine):
    waiting, _ = started
    other = admin_engine.start_workflow("billing")  # 2.0.0
    response = post(admin_client, [waiting[0].pk, other.pk], index=0)
    assert response.status_code == 302
    assert any("one workflow version" in m for m in texts(response))


def test_the_change_permission_is_needed(client, started):
    waiting, _ = started
    viewer = grant(StaffFactory(), "view_workflowinstance")
    client.force_login(viewer)
    listing = client.get(CHANGELIST)
    form = listing.context["action_form"]  # None: no action at all
    assert form is None or "migrate_instances" not in dict(form.fields["action"].choices)
    post(client, [waiting[0].pk], post="yes", to_version="2.0.0")
    assert versions() == ["1.0.0"] * 3

    operator = grant(StaffFactory(), "view_workflowinstance", "change_workflowinstance")
    client.force_login(operator)
    listing = client.get(CHANGELIST)
    assert "migrate_instances" in dict(listing.context["action_form"].fields["action"].choices)
