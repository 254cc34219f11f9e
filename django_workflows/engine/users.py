"""Users as the engine's callers give them: a user object, a pk, or None.

Looked up once, with a clear error (``UnknownUser``, ``InvalidAssignee``) instead of an
``IntegrityError`` at commit.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError

from ..exceptions import InvalidAssignee, UnknownUser

#: The most tasks one activation of a step with ``assignees`` opens.
MAX_ASSIGNEES = 1000


def user_pk(user: Any) -> Any:
    return getattr(user, "pk", user)


def checked_pk(user: Any) -> Any:
    """The pk of ``user`` (an object, a pk, or None), a pk checked to exist."""
    pk = user_pk(user)
    if pk is None or hasattr(user, "pk"):
        return pk
    try:
        exists = get_user_model()._default_manager.filter(pk=pk).exists()
    except (ValueError, TypeError):
        exists = False
    if not exists:
        raise UnknownUser(f"no user with id {pk!r}")
    return pk


def acting_user(user: Any) -> Any:
    """The user object of who acts (claims, unclaims): nobody is refused."""
    if user is None:
        raise PermissionDenied("no user: log in first")
    if hasattr(user, "is_authenticated"):
        return user
    try:
        return get_user_model()._default_manager.get(pk=user)
    except (ObjectDoesNotExist, ValueError, TypeError):
        raise UnknownUser(f"no user with id {user!r}") from None


def assignee_pk(step_name: str, assignee: Any) -> Any:
    """The pk of an existing user, from what ``get_assignee()`` gave; else InvalidAssignee.

    Checked while the transition is planned: an id taken from client data that names
    no user (``424242``, ``"abc"``, ``[1]``) is a clear error, not an IntegrityError at
    commit that would leave the previous step to run again."""
    if assignee is None:
        return None
    user_model = get_user_model()
    pk: Any = assignee.pk if isinstance(assignee, user_model) else assignee
    if isinstance(pk, int | str | uuid.UUID) and not isinstance(pk, bool):
        with contextlib.suppress(ValueError, TypeError, ValidationError):
            lookup: Any = pk  # any pk type the user model has (int, str, UUID)
            users = user_model._default_manager.filter(pk=lookup).values_list("pk", flat=True)
            if (found := users.first()) is not None:
                return found
    raise InvalidAssignee(
        f"human step {step_name!r}: its assignee {assignee!r} is not a user "
        "(get_assignee() must return a user, the pk of an existing user, or None)"
    )


def seats(step_name: str, entries: list[Any]) -> list[tuple[Any, Sequence[str]]]:
    """One (assignee pk, candidate group names) per entry of a step's ``assignees``: a
    user (object or pk) is assigned the task, a string is a group name. Duplicates count
    once; the pks are checked in one query, whatever their number. InvalidAssignee
    names what is neither, or no user; an empty list is a ValueError (the step fails)."""
    if not entries:
        raise ValueError(f"human step {step_name!r}: assignees is empty: nobody could complete it")
    user_model = get_user_model()
    wanted: list[tuple[str, Any]] = []
    for entry in entries:
        if isinstance(entry, str):
            if not entry or len(entry) > 150:
                raise InvalidAssignee(f"human step {step_name!r}: group name {entry!r:.60}")
            wanted.append(("group", entry))
        elif isinstance(entry, user_model):
            wanted.append(("user", entry.pk))
        elif isinstance(entry, int | uuid.UUID) and not isinstance(entry, bool):
            wanted.append(("user", entry))
        else:
            raise InvalidAssignee(
                f"human step {step_name!r}: assignee {entry!r:.60} is neither a user (object "
                "or pk) nor a group name"
            )
    wanted = list(dict.fromkeys(wanted))
    if len(wanted) > MAX_ASSIGNEES:
        raise ValueError(
            f"human step {step_name!r}: {len(wanted)} assignees (at most {MAX_ASSIGNEES})"
        )
    pks = [value for kind, value in wanted if kind == "user"]
    found: set[Any] = set()
    if pks:
        with contextlib.suppress(ValueError, TypeError, ValidationError):
            lookup: Any = pks
            found = set(
                user_model._default_manager.filter(pk__in=lookup).values_list("pk", flat=True)
            )
        if missing := [pk for pk in pks if pk not in found]:
            raise InvalidAssignee(
                f"human step {step_name!r}: assignees {missing!r:.80} are not users"
            )
    return [(value, ()) if kind == "user" else (None, (value,)) for kind, value in wanted]
