"""The app's own pages follow the substitution rule too: a substitute's inbox holds the
absent user's tasks, and the task page says for whom one was done."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from django_workflows.models import HumanTask, TaskStatus
from django_workflows.substitutes import add_substitute

from ..factories import UserFactory

pytestmark = pytest.mark.django_db

INBOX = "/workflows/"


def test_a_substitute_completes_the_absent_employees_task_in_the_app(client, leave, employee):
    task = leave()
    deputy = UserFactory(username="dora")  # no staff status, no group
    client.force_login(deputy)
    assert f'data-task="{task.pk}"' not in client.get(INBOX).content.decode()
    now = timezone.now()
    add_substitute(employee, deputy, now - timedelta(hours=1), now + timedelta(days=5))

    assert f'data-task="{task.pk}"' in client.get(INBOX).content.decode()
    url = reverse("django_workflows:task", args=[task.pk])
    response = client.post(url, {"_action": "Approve"})
    assert response.status_code == 302

    task = HumanTask.objects.get(pk=task.pk)
    assert task.status == TaskStatus.COMPLETED
    assert (task.completed_by, task.completed_on_behalf_of) == (deputy, employee)
    assert "by dora on behalf of erin at" in client.get(url).content.decode()
