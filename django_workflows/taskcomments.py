"""Comments on the task pages (the admin's and the app's own): the instance's comments,
its tasks' included, read-only, and a small form that adds one to the task through
``engine.add_comment``.

Who reads and writes them is who may see the task (``permissions.can_view_task``); the
engine checks it again. An approver reads the employee's question or receipt where they
decide, and an employee who is not staff asks for news on the page they have.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .engine import get_engine
from .engine.comments import MAX_LENGTH
from .models import HumanTask
from .permissions import can_view_task


class CommentForm(forms.Form):
    """A comment and its optional attachment: the task pages' and the instance page's."""

    text = forms.CharField(
        label=gettext_lazy("Comment"),
        max_length=MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    attachment = forms.FileField(label=gettext_lazy("Attachment"), required=False)


def comments_context(user: Any, task: HumanTask) -> dict[str, Any]:
    """``comments``: the instance's comments, oldest first (None for a user who may not
    read them); ``task_comment_form``: the empty form to add one."""
    if not can_view_task(user, task):
        return {"comments": None, "task_comment_form": None}
    rows = task.instance.comments.select_related("author", "task").order_by("created_at", "id")
    return {
        "comments": list(rows),
        "task_comment_form": CommentForm(auto_id="dwf-task-comment-%s"),
    }


def add_comment(request: HttpRequest, task: HumanTask) -> bool:
    """Add the posted comment to ``task``; say how it went in a message. Whether added."""
    form = CommentForm(request.POST, request.FILES)
    if not form.is_valid():
        problems = "; ".join(str(error) for errors in form.errors.values() for error in errors)
        messages.error(request, _("No comment added: %s") % problems)
        return False
    try:
        get_engine().add_comment(
            task.instance_id,
            request.user,
            form.cleaned_data["text"],
            task_id=task.pk,
            attachment=form.cleaned_data.get("attachment"),
        )
    except (ValidationError, PermissionDenied) as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, _("No comment added: %s") % (text or _("not allowed")))
        return False
    messages.success(request, _("Your comment was added."))
    return True
