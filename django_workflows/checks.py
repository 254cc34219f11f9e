"""System checks: settings that do not load, registered graphs that drifted from the stored ones."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, register
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
    errors: list[CheckMessage] = []
    for definition in registry.list_definitions(all_versions=True):
        checksum = stored.get((definition.name, definition.version))
        if checksum is not None and checksum != definition.checksum:
            errors.append(
                Error(
                    f"workflow {definition} differs from the graph stored for that version",
                    hint=(
                        "A stored version is immutable: give the changed graph a new version. "
                        f"Instances of {definition.version} refuse to move until the graphs match."
                    ),
                    obj=f"{definition.name} {definition.version}",
                    id="django_workflows.E002",
                )
            )
    return errors
