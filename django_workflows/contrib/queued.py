"""Moved to ``django_workflows.engine.queued`` (the django-q2 engine shares it); this
name stays for one release."""

from ..engine.queued import QueueExecutionEngine

__all__ = ["QueueExecutionEngine"]
