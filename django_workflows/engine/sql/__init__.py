"""The hand-written SQL of the engine: the instance lock and the chained-step fast path.

Each module builds its statements from the models' ``_meta`` once per connection."""

from __future__ import annotations

from typing import Any, cast

from django.db.models import Field


def concrete_field(meta: Any, name: str) -> Field[Any, Any]:
    """A concrete field of a model by name (``_meta.get_field`` may return a relation)."""
    return cast("Field[Any, Any]", meta.get_field(name))
