"""The external-signal row (``WorkflowSignal``), kept apart from ``models`` for its size;
``models`` re-exports it. Written only by the engine (``engine/signals.py``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class WorkflowSignal(models.Model):
    """A signal sent to an instance: consumed by a ``WaitForSignal`` step, buffered until
    one waits for it, or discarded when the instance finished without consuming it."""

    instance = models.ForeignKey(
        "django_workflows.WorkflowInstance",
        on_delete=models.CASCADE,
        related_name="signals",
        verbose_name=_("instance"),
    )
    name = models.CharField(_("name"), max_length=200)
    data = models.JSONField(_("data"), default=dict, blank=True)
    idempotency_key = models.CharField(
        _("idempotency key"),
        max_length=255,
        blank=True,
        help_text=_(
            "Sending again with the same key (same instance and name) is a no-op; blank: none."
        ),
    )
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("sent by"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    consumed_at = models.DateTimeField(_("consumed at"), null=True, blank=True)
    consumed_by_step_run = models.ForeignKey(
        "django_workflows.StepRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("consumed by step run"),
    )
    discarded_at = models.DateTimeField(
        _("discarded at"),
        null=True,
        blank=True,
        help_text=_("The instance finished without consuming it."),
    )

    class Meta:
        verbose_name = _("workflow signal")
        verbose_name_plural = _("workflow signals")
        permissions = [("send_signal", _("Can send a signal to any workflow instance"))]
        ordering = ("id",)
        indexes = [
            # A wait's lookup: the oldest pending signal of a name (FIFO).
            models.Index(
                fields=("instance", "name", "id"),
                condition=Q(consumed_at__isnull=True, discarded_at__isnull=True),
                name="dwf_signal_pending",
            ),
            models.Index(fields=("instance", "id"), name="dwf_signal_instance"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=("instance", "name", "idempotency_key"),
                condition=~Q(idempotency_key=""),
                name="dwf_signal_idempotency",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def state(self) -> str:
        """consumed, discarded or pending (buffered until a wait for it starts)."""
        if self.consumed_at is not None:
            return "consumed"
        return "discarded" if self.discarded_at is not None else "pending"
