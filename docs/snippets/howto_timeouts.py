from datetime import timedelta

from django.utils import timezone

from django_workflows import BaseHumanStep, BaseMachineStep, RetryPolicy
from django_workflows.models import HumanTask, TaskStatus


class FetchRates(BaseMachineStep):
    timeout = 10  # seconds per try; a try that takes longer fails with TimeoutError
    retry = RetryPolicy(max_attempts=3, backoff=5)  # then up to two more tries

    def execute(self, context):
        rates = rates_api.latest(timeout=5)  # the library's own timeout stops the call
        context.set("eur_rate", rates["EUR"])


class ApproveOrder(BaseHumanStep):
    title = "Approve the order"
    due_in = timedelta(days=2)  # HumanTask.due_at: for inboxes and reminders


def overdue_tasks():
    """Open tasks past their due time, for a reminder job."""
    return HumanTask.objects.filter(
        status=TaskStatus.OPEN, due_at__lt=timezone.now()
    ).select_related("instance", "assignee")
