"""Out-of-office substitutes: who stands in for whom, from when until when.

A ``Substitution`` is a user's own setting, not the state of a workflow, so it is
written here rather than by the engine; what a substitute may then do is the task
rule's (``permissions.py``), and the engine records a completion done on someone's
behalf. The admin and the API call these functions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from .exceptions import NotFound, StateConflict
from .models import Substitution
from .permissions import active_substitutions, active_users_q


def add_substitute(
    user: Any, substitute: Any, starts_at: datetime, ends_at: datetime, reason: str = ""
) -> Substitution:
    """Let ``substitute`` see and complete ``user``'s tasks from ``starts_at`` until
    ``ends_at`` (users or pks; aware datetimes). ``ValidationError`` for a bad period,
    oneself as substitute, an unknown or inactive user."""
    errors: dict[str, list[str]] = {}
    users = {}
    for field, value in (("user", user), ("substitute", substitute)):
        found = _user(value)
        if found is None:
            errors[field] = [f"no active user with id {getattr(value, 'pk', value)!r}"]
        users[field] = found
    for field, value in (("starts_at", starts_at), ("ends_at", ends_at)):
        if not isinstance(value, datetime) or timezone.is_naive(value):
            errors[field] = ["a date and time with its time zone"]
    if errors:
        raise ValidationError(errors)
    substitution = Substitution(
        user=users["user"],
        substitute=users["substitute"],
        starts_at=starts_at,
        ends_at=ends_at,
        reason=reason,
    )
    substitution.full_clean(exclude=["created_at"])
    substitution.save()
    return substitution


def end_substitution(substitution: Substitution | Any) -> Substitution:
    """End a substitution now (``ends_at`` = now; kept, for the record). One already
    over is returned as it is; one not begun yet is a ``StateConflict`` (delete it)."""
    with transaction.atomic():
        pk = getattr(substitution, "pk", substitution)
        try:
            row = Substitution.objects.select_for_update().get(pk=pk)
        except (Substitution.DoesNotExist, ValueError, TypeError):
            raise NotFound(f"no substitution with id {pk!r}") from None
        now = timezone.now()
        if row.starts_at >= now:
            raise StateConflict(f"substitution {row.pk} has not begun: delete it instead")
        if row.ends_at > now:
            row.ends_at = now
            row.save(update_fields=["ends_at"])
        return row


def active_substitutions_for(user: Any) -> QuerySet[Substitution]:
    """The substitutions in force now for ``user`` (a user or a pk) as the absent user."""
    return active_substitutions().filter(user=getattr(user, "pk", user))


def _user(value: Any) -> Any:
    model = get_user_model()
    if isinstance(value, model):
        return value if value.is_active else None
    if value is None or isinstance(value, bool):
        return None
    try:
        return model._default_manager.filter(active_users_q(), pk=value).first()
    except (ValueError, TypeError, OverflowError, ValidationError):
        return None
