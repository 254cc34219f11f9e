"""The hand-written SQL of the engine: the instance lock, the claim, a task's completion
and the chained-step fast path.

Each module builds its statements from the models' ``_meta`` once per connection."""

from __future__ import annotations

from typing import Any, cast

from django.db.models import Field, signals


def saves_unobserved(model: Any) -> bool:
    """Whether nobody listens to ``model``'s ``pre_save`` or ``post_save``, which only
    ``save()`` sends: only then may hand-written SQL write its rows instead."""
    return not signals.pre_save.has_listeners(model) and not signals.post_save.has_listeners(model)


def concrete_field(meta: Any, name: str) -> Field[Any, Any]:
    """A concrete field of a model by name (``_meta.get_field`` may return a relation)."""
    return cast("Field[Any, Any]", meta.get_field(name))


class Converters:
    """The converters the ORM's compiler applies to the columns of a row read by hand
    (``from_db_value``, the backend's), found once: ``columns`` are (field, table)."""

    def __init__(self, connection: Any, columns: list[tuple[Field[Any, Any], str]]) -> None:
        self.found = []
        for index, (field, table) in enumerate(columns):
            col = field.get_col(table)
            found = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
            if found:
                self.found.append((index, found, col))

    def apply(self, row: Any, connection: Any) -> list[Any]:
        values = list(row)
        for index, converters, col in self.found:
            value = values[index]
            for converter in converters:
                value = converter(value, col, connection)
            values[index] = value
        return values
