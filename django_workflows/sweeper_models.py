"""The sweeper's lease row (engine/sweeper.py); a model of the app's ``models``."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class SweeperLease(models.Model):
    """Who runs the cluster's sweep: one row per sweep, taken and renewed by one process
    at a time with a compare-and-set on the database clock (``engine/sweeper.py``)."""

    name = models.CharField(_("name"), max_length=100, primary_key=True)
    holder = models.CharField(
        _("holder"),
        max_length=255,
        blank=True,
        help_text=_("host:pid:id of the sweeper thread holding the lease; blank for none."),
    )
    expires_at = models.DateTimeField(
        _("expires at"), help_text=_("Database time after which another process may take it.")
    )

    class Meta:
        verbose_name = _("sweeper lease")
        verbose_name_plural = _("sweeper leases")

    def __str__(self) -> str:
        return f"{self.name} ({self.holder or 'free'})"
