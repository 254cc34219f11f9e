"""The API's permission class for cancel and retry.

The rules themselves (who sees which instances and tasks, who may cancel, retry and
complete) are written once in ``django_workflows.permissions``; the views filter their
querysets with ``visible_instances`` / ``visible_tasks`` and the engine applies the task
rule. Rows a user may not see answer 404, not 403, so ids of others' rows leak nothing.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from ..permissions import can_manage_instance


class CanManageInstance(BasePermission):
    message = (
        "Only the user who started the instance and users with the "
        "django_workflows.change_workflowinstance permission may cancel or retry it."
    )

    def has_object_permission(self, request, view, obj) -> bool:
        return can_manage_instance(request.user, obj)
