"""System checks: settings that do not load, registered graphs that drifted from the stored
ones, the REST API routed without what it needs."""

from __future__ import annotations

import sys
from typing import Any

from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .conf import DEFAULTS, workflow_settings

    errors: list[CheckMessage] = []
    try:
        workflow_settings.user_settings  # noqa: B018  (raises on unknown keys)
        for key in DEFAULTS:
            getattr(workflow_settings, key)
    except ImproperlyConfigured as exc:
        errors.append(
            Error(
                str(exc),
                hint="See the settings reference in the django-workflows docs.",
                obj="settings.DJANGO_WORKFLOWS",
                id="django_workflows.E001",
            )
        )
        return errors
    site = workflow_settings.SITE_URL
    if not isinstance(site, str) or (site and not site.startswith(("http://", "https://"))):
        errors.append(
            Error(
                f"DJANGO_WORKFLOWS['SITE_URL'] = {site!r} is not an http(s) address",
                hint='Give the address of the site, such as "https://example.com".',
                obj="settings.DJANGO_WORKFLOWS",
                id="django_workflows.E003",
            )
        )
    elif workflow_settings.NOTIFY_BY_EMAIL and not site:
        errors.append(
            CheckWarning(
                "DJANGO_WORKFLOWS['NOTIFY_BY_EMAIL'] is on without a SITE_URL: the links "
                "in the mails are paths without the site's address",
                hint='Set DJANGO_WORKFLOWS["SITE_URL"], such as "https://example.com".',
                obj="settings.DJANGO_WORKFLOWS",
                id="django_workflows.W001",
            )
        )
    errors.extend(_check_retention(workflow_settings.RETENTION))
    errors.extend(_check_metrics_registry(workflow_settings.METRICS_REGISTRY))
    errors.extend(_check_metrics_networks(workflow_settings.METRICS_NETWORKS))
    return errors


def _check_metrics_networks(value: Any) -> list[CheckMessage]:
    """``METRICS_NETWORKS``: a list of addresses or networks (E007)."""
    from .metrics import parse_networks

    try:
        parse_networks(value)
    except ValueError as exc:
        return [
            Error(
                f"DJANGO_WORKFLOWS['METRICS_NETWORKS'] = {value!r}: {exc}",
                hint='Give a list of addresses or CIDR blocks, such as ["10.0.0.0/8", '
                '"127.0.0.1"]. Until then metrics_view serves no network (a token still '
                "works).",
                obj="settings.DJANGO_WORKFLOWS",
                id="django_workflows.E007",
            )
        ]
    return []


def _check_metrics_registry(value: Any) -> list[CheckMessage]:
    """``METRICS_REGISTRY``: None, or a registry (an object with ``register``) or the
    dotted path of one (E006). Only with ``prometheus_client`` installed."""
    from . import metrics

    if value is None or not metrics.available():
        return []
    try:
        metrics.load_registry(value)
    except Exception as exc:
        return [
            Error(
                f"DJANGO_WORKFLOWS['METRICS_REGISTRY'] = {value!r} is not a metrics "
                f"registry: {exc}",
                hint="Give the dotted path of a prometheus_client CollectorRegistry (or the "
                "registry itself), or None for prometheus_client's default registry. "
                "Until then metrics are off.",
                obj="settings.DJANGO_WORKFLOWS",
                id="django_workflows.E006",
            )
        ]
    return []


def _check_retention(value: Any) -> list[CheckMessage]:
    """``RETENTION``: None, a positive timedelta, or a positive number of days, small
    enough to subtract from now (E005): what ``retention.retention_period`` accepts."""
    from .engine.retention import retention_period

    if value is None:
        return []
    try:
        retention_period(value)
    except ValueError as exc:
        return [
            Error(
                f"DJANGO_WORKFLOWS['RETENTION'] = {value!r}: {exc}",
                hint="Give a timedelta, such as timedelta(days=365), a number of days, or "
                "None to keep finished instances forever.",
                obj="settings.DJANGO_WORKFLOWS",
                id="django_workflows.E005",
            )
        ]
    return []


@register(Tags.database)
def check_stored_graphs(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """A stored version's graph is immutable: changing it needs a new version number.

    Tagged ``database``: it runs with ``migrate`` and ``check --database default``.
    """
    if not databases:
        return []
    from .models import DefinitionVersion
    from .registry import registry

    try:
        stored = {(d.name, d.version): d.checksum for d in DefinitionVersion.objects.all()}
    except DatabaseError:  # not migrated yet
        return []
    from .versions import graph_changes_allowed, why_refused

    errors: list[CheckMessage] = []
    for definition in registry.list_definitions(all_versions=True):
        checksum = stored.get((definition.name, definition.version))
        if checksum is not None and checksum != definition.checksum:
            row = DefinitionVersion.objects.get(name=definition.name, version=definition.version)
            if graph_changes_allowed() and not row.instances.exists():
                continue  # replaced by the next start of that version (development)
            errors.append(
                Error(
                    f"workflow {definition} differs from the graph stored for that version",
                    hint=(
                        f"A stored version is immutable: {why_refused(row)}. "
                        f"Instances of {definition.version} refuse to move until the graphs match."
                    ),
                    obj=f"{definition.name} {definition.version}",
                    id="django_workflows.E002",
                )
            )
    return errors


def _api_route() -> str | None:
    """The route of a django-workflows API view in the project's URLconf, or None.

    Any view of ``django_workflows.api`` counts: the included ``django_workflows.api.urls``
    or a subclass routed by the project.
    """
    from django.urls import URLPattern, URLResolver, get_resolver

    try:
        patterns = get_resolver().url_patterns  # imports the URLconf
    except Exception:  # a broken URLconf is for Django's own URL checks to report
        return None
    views = sys.modules.get("django_workflows.api.views")
    if views is None:  # nothing in the URLconf imported the API
        return None

    def walk(patterns: Any, prefix: str) -> str | None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found = walk(pattern.url_patterns, prefix + str(pattern.pattern))
                if found is not None:
                    return found
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "cls", None)
                if isinstance(view_class, type) and issubclass(view_class, views.APIMixin):
                    return prefix + str(pattern.pattern)
        return None

    return walk(patterns, "")


@register(Tags.urls)
def check_api_apps(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The REST API routed without the ``rest_framework`` app: no browsable API (W101).

    A warning, not an error: the API's views then answer JSON to every client, browsers
    included, instead of failing to find DRF's templates.
    """
    from django.apps import apps

    if apps.is_installed("rest_framework"):
        return []
    route = _api_route()
    if route is None:
        return []
    return [
        CheckWarning(
            f"the django-workflows REST API is routed (at {route!r}), but 'rest_framework' "
            "is not in INSTALLED_APPS: without its templates there is no browsable API, "
            "and the API answers JSON only, browsers included",
            hint="Add 'rest_framework' to INSTALLED_APPS (see the setup of the REST API "
            "in the django-workflows docs).",
            obj="settings.INSTALLED_APPS",
            id="django_workflows.W101",
        )
    ]


@register(Tags.urls)
def check_formless_steps(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Human steps without a form or ``fields`` while the REST API is routed (W102).

    A completer may then send any new key with the task (keys already in the context
    are protected either way); a step should say what it takes.
    """
    route = _api_route()
    if route is None:
        return []
    from .forms import form_for_step
    from .registry import registry
    from .steps import BaseHumanStep

    warnings: list[CheckMessage] = []
    for definition in registry.list_definitions(all_versions=True):
        for name, step in definition.steps.items():
            if not isinstance(step, BaseHumanStep) or step.fields is not None:
                continue
            if form_for_step(step) is not None:
                continue
            warnings.append(
                CheckWarning(
                    f"human step {name!r} of workflow {definition} has no form and declares "
                    f"no fields: through the REST API (at {route!r}) a completer may add any "
                    "key to the workflow's context",
                    hint="Give the step a form (form_class or form_schema), or fields = (...) "
                    "naming the keys a completer may set (fields = () for none: its actions' "
                    "values only).",
                    obj=f"{definition.name} {definition.version}: {name}",
                    id="django_workflows.W102",
                )
            )
    return warnings


@register()
def check_sub_workflows(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A SubWorkflowStep naming a workflow (or version) that is not registered (E004):
    each instance reaching it would fail there."""
    from .exceptions import WorkflowNotFound
    from .registry import registry
    from .steps import SubWorkflowStep

    errors: list[CheckMessage] = []
    for definition in registry.list_definitions(all_versions=True):
        for name, step in definition.steps.items():
            if not isinstance(step, SubWorkflowStep):
                continue
            try:
                registry.get_definition(step.workflow, step.version)
            except WorkflowNotFound:
                version = f" version {step.version!r}" if step.version else ""
                errors.append(
                    Error(
                        f"sub-workflow step {name!r} of workflow {definition} starts "
                        f"{step.workflow!r}{version}, which is not registered",
                        hint="Register that workflow (in an app's workflows.py), or fix the "
                        "step's workflow= and version=.",
                        obj=f"{definition.name} {definition.version}: {name}",
                        id="django_workflows.E004",
                    )
                )
    return errors
