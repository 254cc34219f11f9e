from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DjangoWorkflowsConfig(AppConfig):
    name = "django_workflows"
    verbose_name = _("Workflows")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .conf import workflow_settings
        from .registry import autodiscover

        if workflow_settings.AUTODISCOVER:
            autodiscover()
