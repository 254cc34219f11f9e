"""The registry: which workflow definitions (and versions) this process can run."""

from __future__ import annotations

import re
import threading

from .definition import WorkflowDefinition
from .exceptions import DefinitionError, WorkflowNotFound


def version_key(version: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Order versions naturally: "1.10.0" > "1.9.2" > "1.9".

    Numbers compare as numbers and text sorts before numbers and before the end of
    the version, so a release ranks above its pre-releases:
    "1.0.0" > "1.0.0-rc.2" > "1.0.0rc1" > "1.0.0-beta" > "0.9".
    """
    tokens = re.findall(r"\d+|[^\W\d_]+", version)
    key = [(2, int(token)) if token.isdigit() else (0, token) for token in tokens]
    key.append((1, ""))  # the end: after any text, before any further number
    return tuple(key), version  # the string itself breaks ties ("1.0" vs "1-0")


class WorkflowRegistry:
    """Definitions by name and version. Thread-safe; registration validates the graph."""

    def __init__(self) -> None:
        self._definitions: dict[str, dict[str, WorkflowDefinition]] = {}
        self._lock = threading.Lock()

    def register_definition(self, definition: WorkflowDefinition) -> WorkflowDefinition:
        """Validate and register ``definition``; registering the same graph again is a no-op."""
        definition.validate()
        with self._lock:
            versions = self._definitions.setdefault(definition.name, {})
            existing = versions.get(definition.version)
            if existing is not None and existing is not definition:
                if existing.checksum != definition.checksum:
                    raise DefinitionError(
                        f"workflow {definition} is already registered with a different graph; "
                        "give the new graph a new version"
                    )
                return existing
            versions[definition.version] = definition
        return definition

    def unregister(self, name: str, version: str | None = None) -> None:
        with self._lock:
            if version is None:
                self._definitions.pop(name, None)
            else:
                self._definitions.get(name, {}).pop(version, None)

    def get_definition(self, name: str, version: str | None = None) -> WorkflowDefinition:
        """The definition ``name`` at ``version``; None means the highest version."""
        versions = self._definitions.get(name)
        if not versions:
            raise WorkflowNotFound(f"no workflow named {name!r} is registered")
        if version is None:
            return versions[max(versions, key=version_key)]
        try:
            return versions[version]
        except KeyError:
            known = ", ".join(sorted(versions, key=version_key))
            raise WorkflowNotFound(
                f"workflow {name!r} has no version {version!r} (registered: {known})"
            ) from None

    def has_definition(self, name: str, version: str | None = None) -> bool:
        versions = self._definitions.get(name, {})
        return bool(versions) if version is None else version in versions

    def list_definitions(self, *, all_versions: bool = False) -> list[WorkflowDefinition]:
        """The latest version of each workflow by name, or every version."""
        result = []
        for name in sorted(self._definitions):
            versions = self._definitions[name]
            if not versions:
                continue
            ordered = sorted(versions, key=version_key)
            result.extend(versions[v] for v in (ordered if all_versions else ordered[-1:]))
        return result

    def __contains__(self, name: str) -> bool:
        return self.has_definition(name)

    def __len__(self) -> int:
        return sum(len(v) for v in self._definitions.values())


#: The project-wide registry, filled from each installed app's ``workflows.py``.
registry = WorkflowRegistry()


def autodiscover() -> None:
    """Import ``workflows.py`` from every installed app, like ``admin.autodiscover()``."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("workflows")
