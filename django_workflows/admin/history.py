"""An instance's history in the admin: events with user names instead of user ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from ..models import WorkflowEvent
from ._common import compact_json

#: Payload keys naming a user: ``user_id``, ``from_user_id``, ``on_behalf_of_user_id``...
USER_KEY_SUFFIX = "user_id"


def _user_ids(payload: Any) -> dict[str, Any]:
    """The payload's user keys and their ids (numbers, text, or None for no user)."""
    if not isinstance(payload, dict):
        return {}
    return {
        key: value
        for key, value in payload.items()
        if key.endswith(USER_KEY_SUFFIX)
        and isinstance(value, int | str | None)
        and not isinstance(value, bool)
    }


def _label(key: str) -> str:
    """``from_user_id`` -> "from user"; ``user_id`` -> "user"."""
    return key[: -len("_id")].replace("_", " ")


def user_names(ids: Iterable[Any]) -> dict[str, tuple[str, str]]:
    """{str(id): (the name shown, its tooltip)} in one query; a missing user shows
    "#<id> (deleted)". The name is the full name, else the username."""
    wanted = {str(i) for i in ids}
    if not wanted:
        return {}  # no query
    User = get_user_model()
    pk = User._meta.pk
    valid = []
    for raw in wanted:
        try:
            valid.append(pk.to_python(raw))
        except ValidationError:  # not an id of this user model: shown as deleted
            continue
    found = {str(user.pk): user for user in User._default_manager.filter(pk__in=valid)}
    names = {}
    for raw in wanted:
        user = found.get(raw)
        if user is None:
            names[raw] = (_("#%(id)s (deleted)") % {"id": raw}, "")
            continue
        username = user.get_username()
        full = user.get_full_name().strip() if hasattr(user, "get_full_name") else ""
        names[raw] = (full or username, f"{username} #{user.pk}")
    return names


def annotate_history(events: Sequence[WorkflowEvent]) -> None:
    """Set ``payload_users`` [(label, name, tooltip)] and ``payload_text`` (the rest of the
    payload as compact JSON) on each event; one query for every user of the page."""
    names = user_names(
        str(v) for event in events for v in _user_ids(event.payload).values() if v is not None
    )
    names["None"] = ("-", "")  # no user (a start by code, a sweep)
    for event in events:
        payload = event.payload
        users = _user_ids(payload)
        # "user: -" says nobody acted (code, a sweep); an empty "on behalf of user" or
        # "from user" says nothing, and is left out.
        event.payload_users = [
            (_label(key), *names[str(value)])
            for key, value in users.items()
            if value is not None or key == USER_KEY_SUFFIX
        ]
        if isinstance(payload, dict):
            payload = {key: value for key, value in payload.items() if key not in users}
        event.payload_text = compact_json(payload) if payload else ""
