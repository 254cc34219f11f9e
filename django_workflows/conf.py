"""The ``DJANGO_WORKFLOWS`` setting, read lazily like DRF's ``api_settings``.

from django_workflows.conf import workflow_settings
workflow_settings.LEASE_SECONDS
"""

from __future__ import annotations

import warnings
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # Dotted path of the engine class ``get_engine()`` builds.
    "ENGINE": "django_workflows.engine.LocalExecutionEngine",
    # Dotted path of an EventBus class (or None): every event goes to its emit().
    "EVENT_BUS": None,
    # Seconds without a heartbeat after which a claimed step counts as lost (worker killed)
    # and the sweep gives it to another worker. Running steps renew it every third of it.
    "LEASE_SECONDS": 60,
    # Seconds a runnable step may wait unclaimed before the sweep sends it again.
    "STALE_QUEUED_SECONDS": 60,
    # How many times a step run is re-run after its worker died mid-step (lease expired:
    # a deploy, the OOM killer) before the instance fails. Counted apart from the step's
    # own failures, which follow its RetryPolicy.
    "CRASH_LIMIT": 3,
    # With DjangoQExecutionEngine, the qcluster sweeps by itself (one process at a time
    # across machines) every this many seconds: timers fire about this late at most.
    # None: the cluster does not sweep (run ``manage.py workflow_sweep`` yourself).
    "CLUSTER_SWEEP_INTERVAL": 0.5,
    # Retry policy of machine steps that declare none.
    "DEFAULT_MAX_ATTEMPTS": 1,
    "DEFAULT_RETRY_BACKOFF": 0.0,
    "DEFAULT_RETRY_BACKOFF_FACTOR": 2.0,
    "DEFAULT_RETRY_MAX_BACKOFF": 3600.0,
    # Seconds a machine step may run (None: no limit) unless it sets ``timeout``.
    "DEFAULT_STEP_TIMEOUT": None,
    # Largest instance context, in bytes of JSON (None: no limit). Larger initial data or
    # task data is refused; a step that would grow the context past it fails.
    "MAX_CONTEXT_BYTES": 1024 * 1024,
    # Most step runs one instance may have (None: no limit). Checked when a loop's back
    # edge is taken (without loops an instance has at most one run per step, plus
    # retries), so a loop whose exit condition never holds fails instead of running on.
    "MAX_STEP_RUNS": 1000,
    # Whether re-registering a changed graph under a version that no instance runs
    # replaces the stored graph (development); None: when DEBUG is on.
    "ALLOW_GRAPH_CHANGES_WITHOUT_INSTANCES": None,
    # Largest file a comment may carry, in bytes (None: no limit beyond the web server's
    # and Django's FILE_UPLOAD settings). A larger attachment is refused.
    "MAX_COMMENT_ATTACHMENT_BYTES": 10 * 1024 * 1024,
    # The optional backends (read only when that engine or its worker is used):
    # the Celery app the engine sends with (a dotted path; None: celery.current_app),
    "CELERY_APP": None,
    # the URL of the SAQ queue (required by the SAQ engine), and its name.
    "SAQ_URL": None,
    "SAQ_QUEUE": "django_workflows",
    # Import ``workflows.py`` of every installed app at startup.
    "AUTODISCOVER": True,
    # Mail (Django's email backend, after commit) the people a human task is for when it
    # is created, reassigned, reminded or escalated.
    "NOTIFY_BY_EMAIL": False,
    # The site's address ("https://example.com"), put before the task's link in mails.
    "SITE_URL": "",
    # Delete finished instances (and their history) this long after they finished: a
    # timedelta, or a number of days. The sweep purges one batch per pass. None: never.
    "RETENTION": None,
    # Prometheus metrics (extra ``metrics``; docs/operations.md): recorded when
    # prometheus_client is installed and this is on,
    "METRICS": True,
    # in this registry (a dotted path or the object; None: prometheus_client's default),
    "METRICS_REGISTRY": None,
    # served by metrics_view to a bearer token equal to this,
    "METRICS_TOKEN": None,
    # or to clients in these networks ("10.0.0.0/8", "127.0.0.1").
    "METRICS_NETWORKS": [],
    # OpenTelemetry spans (extra ``tracing``): made when opentelemetry-api is installed,
    # a tracer provider is set, and this is on.
    "TRACING": True,
    # Whether the transition committing a machine step's outcome gets a span of its own
    # (a child of the step's); False: an event on the step's span (half the spans).
    "TRACE_STEP_TRANSITIONS": True,
}

IMPORT_STRINGS = ("ENGINE", "EVENT_BUS")


class WorkflowSettings:
    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, "DJANGO_WORKFLOWS", {}) or {}
        unknown = set(value) - set(DEFAULTS)
        if unknown:
            raise ImproperlyConfigured(
                f"DJANGO_WORKFLOWS has unknown keys: {', '.join(sorted(unknown))}; "
                f"known keys: {', '.join(DEFAULTS)}"
            )
        return value

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"invalid DJANGO_WORKFLOWS key {name!r}")
        if name in self._cache:
            return self._cache[name]
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in IMPORT_STRINGS and isinstance(value, str):
            try:
                value = import_string(value)
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"DJANGO_WORKFLOWS['{name}'] = {value!r} could not be imported: {exc}"
                ) from exc
        self._cache[name] = value
        return value

    def reload(self) -> None:
        self._cache.clear()


workflow_settings = WorkflowSettings()


def backend_setting(key: str) -> tuple[Any, str]:
    """``DJANGO_WORKFLOWS[key]`` of an optional backend, and the name to quote in errors.

    The old top-level ``WORKFLOWS_<key>`` settings still work for one release, with a
    ``DeprecationWarning``, when ``DJANGO_WORKFLOWS`` does not set the key."""
    if key in workflow_settings.user_settings:
        return getattr(workflow_settings, key), f"DJANGO_WORKFLOWS[{key!r}]"
    old = f"WORKFLOWS_{key}"
    if hasattr(settings, old):
        warnings.warn(
            f"settings.{old} is deprecated: set DJANGO_WORKFLOWS[{key!r}] instead",
            DeprecationWarning,
            stacklevel=3,
        )
        return getattr(settings, old), f"settings.{old}"
    return DEFAULTS[key], f"DJANGO_WORKFLOWS[{key!r}]"


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "DJANGO_WORKFLOWS":
        workflow_settings.reload()


# The engine forgets its default instance on its own receiver (conf imports no engine code).
setting_changed.connect(_reload)
