"""A stored definition version whose registered graph changed: refused, or (in
development, with no instance on it) updated.

``ALLOW_GRAPH_CHANGES_WITHOUT_INSTANCES`` (None: follow ``DEBUG``) lets a developer edit
a graph without a version bump for every edit while nothing runs on that version; an
instance pins a version for good (then: a new version, and a migration if wanted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from .conf import workflow_settings

if TYPE_CHECKING:
    from .definition import WorkflowDefinition
    from .models import DefinitionVersion

SETTING = 'DJANGO_WORKFLOWS["ALLOW_GRAPH_CHANGES_WITHOUT_INSTANCES"]'


def graph_changes_allowed() -> bool:
    """Whether a changed graph may replace the stored one of a version nobody runs."""
    allowed = workflow_settings.ALLOW_GRAPH_CHANGES_WITHOUT_INSTANCES
    return bool(settings.DEBUG if allowed is None else allowed)


def why_refused(row: DefinitionVersion) -> str:
    """The end of the refusal's message: what to do about it."""
    if row.instances.exists():
        return (
            "instances run that version: give the changed graph a new version "
            "(and migrate the instances to it if they should follow)"
        )
    return (
        f"no instance runs that version: give the changed graph a new version, or allow "
        f"replacing it in development (DEBUG, or {SETTING} = True)"
    )


def replace_stored_graph(row: DefinitionVersion, definition: WorkflowDefinition) -> bool:
    """Store ``definition``'s graph in ``row`` if allowed and no instance runs it (in
    the caller's transaction, the row locked); True if the row now matches."""
    from .models import DefinitionVersion

    if not graph_changes_allowed():
        return False
    locked = DefinitionVersion.objects.select_for_update().get(pk=row.pk)
    if locked.checksum == definition.checksum:
        return True  # a concurrent start replaced it
    if locked.instances.exists():
        return False
    DefinitionVersion.objects.filter(pk=row.pk).update(
        graph=definition.graph(),
        checksum=definition.checksum,
        description=definition.description,
    )
    row.graph, row.checksum = definition.graph(), definition.checksum
    row.description = definition.description
    return True
