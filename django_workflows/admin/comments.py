"""Comments on the instance page: the list (read-only, oldest first, task comments named
by their task) and a small form that adds one through ``engine.add_comment``.

Who may comment is who may see the instance (``permissions.can_view_instance``); the
engine checks it again. Comments are written only through the engine, never edited.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _

from ..engine import get_engine
from ..models import WorkflowInstance
from ..taskcomments import CommentForm


def comments_context(request: HttpRequest, instance: WorkflowInstance) -> dict[str, Any]:
    """The instance page's comments and the form to add one."""
    rows = instance.comments.select_related("author", "task").order_by("created_at", "id")
    return {
        "comments": list(rows),
        "comment_form": CommentForm(auto_id="dwf-comment-%s"),
        "comment_url": reverse(
            "admin:django_workflows_workflowinstance_comment", args=[instance.pk]
        ),
    }


class InstanceCommentMixin:
    """``comment_view`` of the instance admin: POST a comment, back to the instance page."""

    def comment_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        instance = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if instance is None or not self.has_view_permission(request, instance):  # type: ignore[attr-defined]
            raise PermissionDenied
        page = reverse("admin:django_workflows_workflowinstance_change", args=[instance.pk])
        form = CommentForm(request.POST, request.FILES)
        if not form.is_valid():
            errors = "; ".join(f"{e}" for errs in form.errors.values() for e in errs)
            self.message_user(request, _("No comment added: %s") % errors, messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(f"{page}#dwf-comments")
        try:
            get_engine().add_comment(
                instance.pk,
                request.user,
                form.cleaned_data["text"],
                attachment=form.cleaned_data.get("attachment"),
            )
        except ValidationError as exc:
            text = "; ".join(exc.messages)
            self.message_user(request, _("No comment added: %s") % text, messages.ERROR)  # type: ignore[attr-defined]
        else:
            self.message_user(request, _("Your comment was added."), messages.SUCCESS)  # type: ignore[attr-defined]
        return HttpResponseRedirect(f"{page}#dwf-comments")
