"""Prometheus metrics (extra ``metrics``: ``prometheus_client``).

- Counters, from the engine's events after commit (a ``workflow_event`` receiver):
  instances started, completed, failed, canceled (by workflow); steps executed, failed,
  retried, crashed (by workflow and step).
- Histograms: step duration and queue delay (measured by the step hook,
  ``tracing.step_span``, in the process that runs the step); human-task wait (created to
  completed, from ``HumanTaskCompleted``).
- Gauges read from the database when scraped (``DatabaseCollector``): open tasks by
  candidate group, overdue tasks, instances by workflow and status, runs waiting in the
  queue and the age of the oldest.

They live in ``prometheus_client``'s default registry unless ``METRICS_REGISTRY`` names
another. ``metrics_view`` serves them (see ``docs/operations.md``). Without
``prometheus_client`` installed, or with the ``METRICS`` setting off, nothing is recorded.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.module_loading import import_string

try:
    import prometheus_client
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the extra is not installed
    prometheus_client = None  # type: ignore[assignment]

logger = logging.getLogger("django_workflows.metrics")

PREFIX = "django_workflows_"
#: Seconds: a step's duration and its queue delay (10 ms to 1 hour).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Seconds a human task waits: a minute to a month.
WAIT_BUCKETS = (60, 300, 900, 3600, 4 * 3600, 8 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400)

_lock = threading.Lock()
#: The metrics of each registry they were registered on (weakly: a registry that is gone
#: takes them along; keying by ``id()`` would hand a new registry a dead one's metrics).
_by_registry: weakref.WeakKeyDictionary[Any, StepMetrics] = weakref.WeakKeyDictionary()
#: The ``METRICS_REGISTRY`` values that failed (logged once each).
_broken: set[str] = set()


def available() -> bool:
    """Whether ``prometheus_client`` is installed."""
    return prometheus_client is not None


def registry() -> Any:
    """The registry named by ``METRICS_REGISTRY`` (a dotted path or the object), else
    ``prometheus_client``'s default one."""
    from .conf import workflow_settings

    return load_registry(workflow_settings.METRICS_REGISTRY)


def load_registry(value: Any) -> Any:
    """``METRICS_REGISTRY``'s registry: ``ImportError`` if a dotted path does not import,
    ``TypeError`` if what it names is not a registry (no ``register``)."""
    if value is None:
        return prometheus_client.REGISTRY
    target = import_string(value) if isinstance(value, str) else value
    if not callable(getattr(target, "register", None)):
        raise TypeError(f"{value!r} is not a registry (it has no register())")
    return target


def step_metrics() -> StepMetrics | None:
    """The metrics of the configured registry (created and registered once), or None
    when metrics are off. A registry that fails to load or to take the metrics is
    logged (once) and turns metrics off: metrics never fail a workflow."""
    from .conf import workflow_settings

    if prometheus_client is None or not workflow_settings.METRICS:
        return None
    try:
        target = registry()
        with _lock:
            found = _by_registry.get(target)
            if found is None:
                found = _by_registry[target] = StepMetrics(target)
            return found
    except Exception:
        key = repr(workflow_settings.METRICS_REGISTRY)
        with _lock:
            first = key not in _broken
            _broken.add(key)
        if first:
            logger.exception(
                "DJANGO_WORKFLOWS['METRICS_REGISTRY'] = %s: building the metrics failed; "
                "metrics are off (see manage.py check)",
                key,
            )
        return None


class StepMetrics:
    """The counters and histograms, registered on one registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        def counter(name: str, doc: str, *labels: str) -> Any:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        by_step = ("workflow", "step")
        self.instances = {
            "WorkflowStarted": counter("instances_started", "Instances started.", "workflow"),
            "WorkflowCompleted": counter("instances_completed", "Instances completed.", "workflow"),
            "WorkflowFailed": counter("instances_failed", "Instances failed.", "workflow"),
            "WorkflowCanceled": counter("instances_canceled", "Instances canceled.", "workflow"),
        }
        self.steps = {
            "completed": counter(
                "steps_executed", "Steps that completed (machine, gateway, timer).", *by_step
            ),
            "failed": counter("steps_failed", "Steps that failed for good.", *by_step),
            "retrying": counter(
                "steps_retried", "Step attempts that ended and will run again.", *by_step
            ),
        }
        self.crashed = counter(
            "steps_crashed", "Step runs whose worker died (lease expired).", *by_step
        )
        self.duration = Histogram(
            PREFIX + "step_duration_seconds",
            "Machine steps: execute() and committing its outcome.",
            by_step,
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.delay = Histogram(
            PREFIX + "queue_delay_seconds",
            "Machine step runs taken from the queue: queued to started.",
            by_step,
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.task_wait = Histogram(
            PREFIX + "human_task_wait_seconds",
            "Human tasks: created to completed.",
            by_step,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        registry.register(DatabaseCollector())

    def step_duration(self, workflow: str, step: str, seconds: float) -> None:
        self.duration.labels(workflow, step).observe(seconds)

    def queue_delay(self, workflow: str, step: str, seconds: float) -> None:
        self.delay.labels(workflow, step).observe(seconds)

    def count(self, event: Any) -> None:
        """One event's counters (and the human-task wait)."""
        kind = event.type
        if kind == "StepExecuted":
            counter = self.steps.get(event.status)
            if counter is not None:
                counter.labels(event.workflow_name, event.step_name).inc()
            if event.status != "completed" and crashed(event.error):
                self.crashed.labels(event.workflow_name, event.step_name).inc()
        elif kind in self.instances:
            self.instances[kind].labels(event.workflow_name).inc()
        elif kind == "HumanTaskCompleted":
            self._task_wait(event)

    def _task_wait(self, event: Any) -> None:
        self.task_wait.labels(event.workflow_name, event.step_name).observe(event.waited_seconds)


def crashed(error: str) -> bool:
    """Whether a step's error is the sweep's "its worker died" (``engine.sweep.recover``),
    not an exception of the step (always "Type: message")."""
    return error == "lease expired" or (
        error.startswith("step ") and "keeps killing its worker" in error
    )


def on_event(sender: Any, event: Any, **kwargs: Any) -> None:
    """The ``workflow_event`` receiver: count the event (when metrics are on)."""
    from . import tracing

    metrics = tracing.recorder()
    if metrics is not None:
        metrics.count(event)


# -- gauges read at scrape time --------------------------------------------------------


class DatabaseCollector:
    """Gauges computed from the database on each scrape (a handful of indexed counts)."""

    def describe(self) -> Iterator[Any]:
        # Named without samples: registering must not query the database.
        yield from self._families()

    def _families(self) -> list[Any]:
        return [
            GaugeMetricFamily(
                PREFIX + "open_tasks", "Open human tasks by candidate group.", labels=["group"]
            ),
            GaugeMetricFamily(PREFIX + "overdue_tasks", "Open human tasks past their due time."),
            GaugeMetricFamily(
                PREFIX + "instances",
                "Workflow instances by workflow and status.",
                labels=["workflow", "status"],
            ),
            GaugeMetricFamily(PREFIX + "queued_runs", "Machine step runs waiting in the queue."),
            GaugeMetricFamily(
                PREFIX + "oldest_queued_run_age_seconds",
                "Seconds the longest-waiting queued run has been runnable (0 if none).",
            ),
        ]

    def collect(self) -> Iterator[Any]:
        try:
            values = _database_values()
        except Exception:
            logger.exception("reading the workflow gauges from the database failed")
            return
        tasks, overdue, instances, queued, oldest = self._families()
        for group, count in values["tasks"]:
            tasks.add_metric([group], count)
        overdue.add_metric([], values["overdue"])
        for workflow, status, count in values["instances"]:
            instances.add_metric([workflow, status], count)
        queued.add_metric([], values["queued"])
        oldest.add_metric([], values["oldest"])
        yield from (tasks, overdue, instances, queued, oldest)


def _database_values() -> dict[str, Any]:
    from django.db.models import Count, Min, Q
    from django.db.models.functions import Coalesce

    from .models import HumanTask, HumanTaskGroup, StepRun, TaskStatus, WorkflowInstance

    now = timezone.now()
    open_tasks = HumanTask.objects.filter(status=TaskStatus.OPEN)
    tasks = list(
        HumanTaskGroup.objects.filter(task__status=TaskStatus.OPEN)
        .values("name")
        .annotate(n=Count("id"))
        .values_list("name", "n")
    )
    # Always a sample, 0 included: the gauge never vanishes (an ``absent()`` alert on
    # it means the scrape failed, not that every task is done).
    tasks.append(("", open_tasks.filter(candidate_groups__isnull=True).count()))
    instances = list(
        WorkflowInstance.objects.values("definition__name", "status")
        .annotate(n=Count("id"))
        .values_list("definition__name", "status", "n")
    )
    runnable = StepRun.objects.filter(status="queued").filter(
        Q(due_at__isnull=True) | Q(due_at__lte=now)
    )
    queue = runnable.aggregate(n=Count("id"), since=Min(Coalesce("due_at", "queued_at")))
    since = queue["since"]
    return {
        "tasks": tasks,
        "overdue": open_tasks.filter(due_at__lt=now).count(),
        "instances": instances,
        "queued": queue["n"],
        "oldest": max((now - since).total_seconds(), 0.0) if since is not None else 0.0,
    }


# -- the view ----------------------------------------------------------------------------


def allowed(request: HttpRequest) -> bool:
    """``METRICS_TOKEN`` as a bearer token, or a client address in ``METRICS_NETWORKS``."""
    from .conf import workflow_settings

    token = workflow_settings.METRICS_TOKEN
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if token and scheme.lower() == "bearer":  # the scheme is case-insensitive (RFC 7235)
        return hmac.compare_digest(credentials.strip().encode(), str(token).encode())
    try:
        networks = parse_networks(workflow_settings.METRICS_NETWORKS)
    except ValueError as exc:  # reported by manage.py check; deny meanwhile
        logger.error("DJANGO_WORKFLOWS['METRICS_NETWORKS']: %s; denying the scrape", exc)
        return False
    if networks:
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(address in net for net in networks)
    return False


def parse_networks(value: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``METRICS_NETWORKS`` parsed: ``ValueError`` for a string instead of a list, or an
    entry that is not an address or network."""
    if not value:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"{value!r} is not a list of networks (such as [{value!r}])")
    networks = []
    for entry in value:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{entry!r} is not an address or network: {exc}") from exc
    return networks


def scrape_registry() -> Any:
    """What a scrape reads: the configured registry; in multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR`` set), a fresh one over every process's files, with the
    database gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry, multiprocess

        fresh = CollectorRegistry()
        multiprocess.MultiProcessCollector(fresh)
        fresh.register(DatabaseCollector())
        return fresh
    # Registered (with the gauges) even before the first event; None if that failed.
    return registry() if step_metrics() is not None else None


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus' text format: ``path("metrics", metrics_view)``.

    403 unless the request carries ``METRICS_TOKEN`` or comes from ``METRICS_NETWORKS``;
    503 without ``prometheus_client`` or with ``METRICS`` off."""
    from .conf import workflow_settings

    if not allowed(request):
        return HttpResponse(
            "Forbidden: set DJANGO_WORKFLOWS['METRICS_TOKEN'] and send it as a bearer "
            "token, or list the scraper's network in METRICS_NETWORKS.\n",
            status=403,
            content_type="text/plain",
        )
    if prometheus_client is None or not workflow_settings.METRICS:
        return HttpResponse(
            "Metrics are off: pip install 'django-workflows-engine[metrics]' and keep "
            "DJANGO_WORKFLOWS['METRICS'] on.\n",
            status=503,
            content_type="text/plain",
        )
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    target = scrape_registry()
    if target is None:
        return HttpResponse(
            "Metrics are off: DJANGO_WORKFLOWS['METRICS_REGISTRY'] did not load (see the "
            "log and manage.py check).\n",
            status=503,
            content_type="text/plain",
        )
    return HttpResponse(generate_latest(target), content_type=CONTENT_TYPE_LATEST)
