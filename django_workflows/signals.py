"""Django signals. Sent after the transition's transaction committed.

``workflow_event`` is sent for every event with ``sender`` = the event class
(``WorkflowCompleted``, ...) and ``event`` = the event. Connect to one type with
``workflow_event.connect(handler, sender=WorkflowCompleted)``. A receiver that
raises is logged and never breaks the workflow.
"""

from django.dispatch import Signal

workflow_event = Signal()
