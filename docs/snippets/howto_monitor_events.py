import logging

from django.dispatch import receiver

from django_workflows import EventBus, WorkflowFailed
from django_workflows.models import WorkflowEvent
from django_workflows.signals import workflow_event

logger = logging.getLogger("myproject.workflows")


class MetricsBus(EventBus):
    """Counts every event. DJANGO_WORKFLOWS = {"EVENT_BUS": "myproject.events.MetricsBus"}"""

    def emit(self, event):
        metrics.increment(f"workflow.{event.type}", tags={"workflow": event.workflow_name})


@receiver(workflow_event, sender=WorkflowFailed)
def alert_on_failure(sender, event, **kwargs):
    logger.error(
        "workflow %s (instance %s) failed at %s: %s",
        event.workflow_name,
        event.instance_id,
        event.step_name,
        event.error,
    )


def failures_since(when):
    """The history rows: written in the transition's transaction, so none is ever missed."""
    return WorkflowEvent.objects.filter(type="WorkflowFailed", created_at__gte=when).select_related(
        "instance__definition"
    )
