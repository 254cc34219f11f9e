"""The context a step sees: a JSON snapshot of the instance data plus its own changes."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from .exceptions import ContextError

#: Deepest nesting of lists and objects a context value may have.
MAX_DEPTH = 100


def _scan(value: Any) -> tuple[int, bool]:
    """Nesting depth of lists and dicts, and whether a string holds NUL (which PostgreSQL's
    jsonb cannot store); without recursion, since a hostile value may be deep."""
    deepest, nul, stack = 0, False, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            nul = nul or "\x00" in item
        elif isinstance(item, dict | list | tuple):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                break
            if isinstance(item, dict):
                stack.extend((key, level) for key in item)
                stack.extend((child, level + 1) for child in item.values())
            else:
                stack.extend((child, level + 1) for child in item)
    return deepest, nul


def check_json(key: str, value: Any) -> None:
    """Raise ContextError unless ``value`` round-trips through JSON as a database stores it:
    no NaN, no lone surrogates (not UTF-8), no NUL character, at most ``MAX_DEPTH`` deep."""
    depth, nul = _scan(value)
    if depth > MAX_DEPTH:
        raise ContextError(f"context value for {key!r} is nested deeper than {MAX_DEPTH} levels")
    if nul or "\x00" in key:
        raise ContextError(f"context value for {key!r} contains a NUL character (\\u0000)")
    try:
        json.dumps({key: value}, allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ContextError(
            f"context value for {key!r} is not JSON-serializable ({type(value).__name__}): {exc}"
        ) from None


def check_size(data: Mapping[str, Any], what: str = "the context") -> None:
    """Raise ContextError if ``data`` as JSON exceeds ``DJANGO_WORKFLOWS['MAX_CONTEXT_BYTES']``."""
    from .conf import workflow_settings

    limit = workflow_settings.MAX_CONTEXT_BYTES
    if limit is None:
        return
    size = len(json.dumps(data, separators=(",", ":")).encode())
    if size > limit:
        raise ContextError(
            f"{what} would be {size:,} bytes of JSON; the limit is {limit:,} "
            "(DJANGO_WORKFLOWS['MAX_CONTEXT_BYTES'])"
        )


class WorkflowContext(Mapping[str, Any]):
    """What ``execute(context)`` receives.

    Reads see the instance data as it was when the step started plus what the
    step set itself. Writes are recorded as changes; the engine merges them into
    the instance under its lock when the step completes, and drops them if the
    step fails, so a failing step never corrupts the instance.
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        instance_id: Any = None,
        step_name: str | None = None,
        attempt: int = 1,
        user_id: Any = None,
    ) -> None:
        # A deep copy: a step mutating a nested list must not reach the stored snapshot.
        self._data: dict[str, Any] = copy.deepcopy(dict(data or {}))
        self._changes: dict[str, Any] = {}
        self._instance_id = instance_id
        self._step_name = step_name
        self._attempt = attempt
        self._user_id = user_id

    instance_id = property(lambda self: self._instance_id, doc="The workflow instance's id.")
    step_name = property(lambda self: self._step_name, doc="The running step's name.")
    attempt = property(lambda self: self._attempt, doc="1 on the first try, 2 on the first retry.")
    user_id = property(
        lambda self: self._user_id, doc="Who started the instance or completed the task."
    )

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise ContextError(f"context keys must be strings, not {type(key).__name__}")
        check_json(key, value)
        self._data[key] = value
        self._changes[key] = value

    def update(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self.set(key, value)

    @property
    def changes(self) -> dict[str, Any]:
        """The values set by this step, checked again for JSON (nested values may have changed)."""
        for key, value in self._changes.items():
            check_json(key, value)
        return dict(self._changes)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<WorkflowContext instance={self._instance_id} step={self._step_name}>"
