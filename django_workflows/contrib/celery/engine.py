"""``CeleryExecutionEngine``: machine steps run as Celery tasks on your Celery workers."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

try:
    import celery
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "CeleryExecutionEngine needs Celery: pip install 'django-workflows-engine[celery]'"
    ) from exc

from ... import tracing
from ...conf import backend_setting
from ...engine.queued import QueueExecutionEngine
from .tasks import RUN_STEP


class CeleryExecutionEngine(QueueExecutionEngine):
    """Runs machine steps as the ``django_workflows.run_step`` task of a Celery app.

    ``celery_app`` is the app (or its dotted path) that sends the messages; by default
    ``DJANGO_WORKFLOWS["CELERY_APP"]`` (a dotted path such as ``"proj.celery.app"``),
    else ``celery.current_app``. Its workers must have called ``register_tasks(app)``.
    Messages carry the step-run id only and go out after commit; routing follows the
    app's ``task_routes`` for ``django_workflows.run_step``.
    """

    def __init__(
        self, registry: Any = None, event_bus: Any = None, *, celery_app: Any = None
    ) -> None:
        super().__init__(registry, event_bus)
        self.celery_app = _resolve_app(celery_app)

    def send(self, run_id: int) -> None:
        args = [run_id, *tracing.message_args(run_id)]
        self.celery_app.send_task(RUN_STEP, args=args, ignore_result=True)


def _resolve_app(app: Any) -> Any:
    source = "celery_app"
    if app is None:
        app, source = backend_setting("CELERY_APP")
    if app is None:
        return celery.current_app._get_current_object()
    if isinstance(app, str):
        try:
            app = import_string(app)
        except ImportError as exc:
            raise ImproperlyConfigured(f"{source} = {app!r} could not be imported: {exc}") from exc
    if not isinstance(app, celery.Celery):
        raise ImproperlyConfigured(f"{source} must be a Celery app, not {type(app).__name__}")
    return app
