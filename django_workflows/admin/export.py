"""The instance page's "Export history (JSON)" link: the instance's full history as a
JSON file (``django_workflows.export``), for whoever may view the instance."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import path

from ..export import instance_document


class InstanceExportMixin:
    """``<id>/export/``: a JSON download; the same permission as the instance page."""

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/export/",
                self.admin_site.admin_view(self.export_view),
                name="{}_{}_export".format(*info),
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        doc = instance_document(obj.pk)
        response = HttpResponse(
            json.dumps(doc, ensure_ascii=False, indent=2), content_type="application/json"
        )
        response["Content-Disposition"] = f'attachment; filename="workflow-instance-{obj.pk}.json"'
        return response
