from django.apps import AppConfig, apps
from django.utils.translation import gettext_lazy as _


class DjangoWorkflowsConfig(AppConfig):
    name = "django_workflows"
    verbose_name = _("Workflows")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            metrics,
        )
        from .conf import workflow_settings
        from .notifications import on_event
        from .registry import autodiscover
        from .signals import workflow_event

        # Mails about human tasks; it does nothing unless NOTIFY_BY_EMAIL is on (read when
        # an event comes, so override_settings turns it on in a test).
        workflow_event.connect(on_event, dispatch_uid="django_workflows.notifications")
        if metrics.available():  # the counters (extra ``metrics``; off with METRICS False)
            workflow_event.connect(metrics.on_event, dispatch_uid="django_workflows.metrics")

        if workflow_settings.AUTODISCOVER:
            autodiscover()
        if apps.is_installed("django_q"):
            # qcluster worker processes start the cluster's sweeper (engine/sweeper.py);
            # the receiver decides there, from the settings, whether to start it.
            from django_q.signals import post_spawn

            from .engine.sweeper import start_in_worker

            post_spawn.connect(start_in_worker, dispatch_uid="django_workflows.sweeper")
