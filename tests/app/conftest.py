"""Fixtures of the app's own pages: the admin tests' engine and workflows, a leave
request whose task a non-staff employee of the ``managers`` group approves."""

import pytest
from django import forms

from django_workflows import BaseHumanStep, WorkflowDefinition
from django_workflows.models import HumanTask

from ..admin.conftest import admin_engine, approver, other_manager, start  # noqa: F401
from ..factories import UserFactory


class LeaveForm(forms.Form):
    approved = forms.BooleanField(required=False)
    comments = forms.CharField(required=False, widget=forms.Textarea)


def leave_request() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="leave",
        version="1",
        initial_step="approve",
        steps={
            "approve": BaseHumanStep(
                title="Approve the leave",
                form_class=LeaveForm,
                candidate_groups=("managers",),
                actions={"Approve": {"approved": True}, "Reject": {"approved": False}},
                action_kinds={"Reject": "danger"},
                summary="{employee}: {days} days from {start}",
                display_fields={"employee": "Employee", "days": "Days", "start": "From"},
            )
        },
    )


@pytest.fixture
def employee(managers):
    """An ordinary employee (no staff status, no permission) in the managers group."""
    return UserFactory(username="erin", first_name="Erin", groups=[managers])


@pytest.fixture
def colleague(managers):
    return UserFactory(username="carl", groups=[managers])


@pytest.fixture
def outsider(db):
    """Staff in no group, with no permission: staff status grants nothing."""
    return UserFactory(username="olga", is_staff=True)


@pytest.fixture
def leave(admin_engine):  # noqa: F811  (the fixture imported above)
    admin_engine.registry.register_definition(leave_request())

    def start_leave(employee="Ada", days=3, **data):
        instance = admin_engine.start_workflow(
            "leave",
            initial_data={"employee": employee, "days": days, "start": "2026-12-21", **data},
        )
        return HumanTask.objects.get(instance=instance)

    return start_leave
