"""The instance as a thread's last committed transition of it left it.

``start_workflow``, ``complete_task`` and ``complete_human_task`` return that object
instead of reading the instance again (one statement less per call).
"""

from __future__ import annotations

import threading
from typing import Any

from ..models import WorkflowInstance

_left = threading.local()


def remember(instance: WorkflowInstance) -> None:
    """``instance`` as this thread's last committed transition left it: what a call that
    started or completed something returns (``as_left``), without reading it again."""
    _left.instance = instance


def as_left(instance_id: Any) -> WorkflowInstance:
    """The instance as this thread's last committed transition of it left it, else
    read from the database."""
    instance = getattr(_left, "instance", None)
    _left.instance = None
    if instance is not None and instance.pk == instance_id:
        return instance
    return WorkflowInstance.objects.select_related("definition").get(pk=instance_id)
