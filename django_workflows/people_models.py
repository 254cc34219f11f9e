"""The rows people write around human tasks: out-of-office substitutions and comments.
Kept apart from ``models`` for its size; ``models`` re-exports them."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class Substitution(models.Model):
    """While ``user`` is away (``starts_at`` <= now < ``ends_at``), ``substitute`` may see
    and complete the tasks the task rule gives ``user`` (not ``user``'s permissions)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="workflow_substitutions",
        verbose_name=_("absent user"),
        help_text=_("Whose tasks the substitute takes over."),
    )
    substitute = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="workflow_substitutions_taken",
        verbose_name=_("substitute"),
        help_text=_("Who may see and complete them meanwhile."),
    )
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"), help_text=_("The first moment it is over."))
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("substitution")
        verbose_name_plural = _("substitutions")
        ordering = ("-starts_at", "-id")
        indexes = [
            # "Active now for substitute X" (every task filter of X) and "X's own".
            models.Index(fields=("substitute", "ends_at"), name="dwf_subst_substitute"),
            models.Index(fields=("user", "ends_at"), name="dwf_subst_user"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="dwf_subst_ends_after_start"
            ),
            models.CheckConstraint(
                condition=~Q(substitute=models.F("user")), name="dwf_subst_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.substitute} for {self.user}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.user_id is not None and self.user_id == self.substitute_id:
            errors["substitute"] = _("A user cannot be their own substitute.")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            errors["ends_at"] = _("The end must come after the start.")
        if errors:
            raise ValidationError(errors)


class Comment(models.Model):
    """A person's remark on an instance, or on one of its tasks: written through the
    engine (``add_comment``, or with a completion), shown in the history."""

    instance = models.ForeignKey(
        "django_workflows.WorkflowInstance",
        on_delete=models.CASCADE,
        related_name="comments",
        verbose_name=_("instance"),
    )
    task = models.ForeignKey(
        "django_workflows.HumanTask",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="comments",
        verbose_name=_("task"),
        help_text=_("The task commented on; empty for a comment on the instance."),
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="workflow_comments",
        verbose_name=_("author"),
    )
    text = models.TextField(_("text"))
    attachment = models.FileField(
        _("attachment"),
        upload_to="workflow-comments/%Y/%m/",
        blank=True,
        help_text=_("An optional file, kept in the project's default storage."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("comment")
        verbose_name_plural = _("comments")
        ordering = ("created_at", "id")
        indexes = [models.Index(fields=("instance", "created_at"), name="dwf_comment_instance")]

    def __str__(self) -> str:
        return self.text[:50]
