"""Out-of-office substitutes: each user manages their own; ``change_substitution``, everyone's.

No model permission is needed to name one's own substitute (any active staff user may):
the list shows the substitutions the user is absent in or stands in for
(``permissions.visible_substitutions``), and only the absent user, or a holder of
``django_workflows.change_substitution``, may change or delete one.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..models import Substitution
from ..permissions import (
    active_users_q,
    can_manage_substitution,
    is_active_user,
    manages_every_substitution,
    visible_substitutions,
)
from .columns import one_line, short_datetime


def user_by_name_field(**kwargs: Any) -> forms.ModelChoiceField:
    """A user typed by username: no list of every user, no need to see the user admin."""
    model = get_user_model()
    return forms.ModelChoiceField(
        queryset=model._default_manager.filter(active_users_q()),
        to_field_name=model.USERNAME_FIELD,
        widget=forms.TextInput,
        error_messages={"invalid_choice": gettext_lazy("There is no active user of that name.")},
        **kwargs,
    )


@admin.register(Substitution)
class SubstitutionAdmin(admin.ModelAdmin):
    # Short cells (see columns.py): the list fits 1280 px with the nav sidebar open.
    list_display = (
        "user_display",
        "substitute_display",
        "starts_display",
        "ends_display",
        "state_display",
        "reason_short",
    )
    list_select_related = ("user", "substitute")
    list_filter = (("ends_at", admin.DateFieldListFilter),)
    ordering = ("-starts_at", "-id")
    fields = ("user", "substitute", "starts_at", "ends_at", "reason")

    # -- permissions: one's own, or everyone's with change_substitution ------------

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_active_user(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return is_active_user(request.user)
        return visible_substitutions(request.user).filter(pk=obj.pk).exists()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return can_manage_substitution(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_manage_substitution(request.user, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_manage_substitution(request.user, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Substitution]:
        return visible_substitutions(request.user, super().get_queryset(request))

    # -- the form: the absent user is oneself unless one manages everyone's ----------

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_fields(request, obj))
        if not manages_every_substitution(request.user):
            fields.remove("user")
        return fields

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"starts_at": timezone.now(), **super().get_changeform_initial_data(request)}

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name in ("user", "substitute"):
            return user_by_name_field(
                label=db_field.verbose_name.capitalize(),
                help_text=gettext_lazy("Their username. %(help)s") % {"help": db_field.help_text},
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        form = super().get_form(request, obj, change, **kwargs)
        if manages_every_substitution(request.user):
            return form
        me = request.user

        class OwnSubstitutionForm(form):  # type: ignore[misc,valid-type]
            """The absent user is who fills it in; set before validation, which checks
            that nobody names themselves."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                if self.instance.user_id is None:
                    self.instance.user = me

        return OwnSubstitutionForm

    @admin.display(description=gettext_lazy("absent user"), ordering="user")
    def user_display(self, obj: Substitution) -> SafeString:
        return one_line(str(obj.user), limit=40)

    @admin.display(description=gettext_lazy("substitute"), ordering="substitute")
    def substitute_display(self, obj: Substitution) -> SafeString:
        return one_line(str(obj.substitute), limit=40)

    @admin.display(description=gettext_lazy("starts at"), ordering="starts_at")
    def starts_display(self, obj: Substitution) -> SafeString:
        return short_datetime(obj.starts_at)

    @admin.display(description=gettext_lazy("ends at"), ordering="ends_at")
    def ends_display(self, obj: Substitution) -> SafeString:
        return short_datetime(obj.ends_at)

    @admin.display(description=gettext_lazy("reason"))
    def reason_short(self, obj: Substitution) -> SafeString:
        return one_line(obj.reason, limit=40) if obj.reason else mark_safe("-")

    @admin.display(description=gettext_lazy("state"))
    def state_display(self, obj: Substitution) -> str:
        now = timezone.now()
        if obj.ends_at <= now:
            return str(gettext_lazy("over"))
        if obj.starts_at > now:
            return str(gettext_lazy("planned"))
        return str(gettext_lazy("active"))


def mark_on_behalf(events: list[Any]) -> None:
    """Set ``on_behalf_text`` ("completed by X on behalf of Y") on the history's
    ``HumanTaskCompleted`` events done by a substitute; one query for all their users."""
    done = [
        event
        for event in events
        if event.type == "HumanTaskCompleted" and event.payload.get("on_behalf_of_user_id")
    ]
    if not done:
        return
    pks = {e.payload.get(key) for e in done for key in ("user_id", "on_behalf_of_user_id")}
    model = get_user_model()
    names = {
        user.pk: user.get_username()
        for user in model._default_manager.filter(pk__in=[pk for pk in pks if pk is not None])
    }
    for event in done:
        by, absent = event.payload.get("user_id"), event.payload["on_behalf_of_user_id"]
        event.on_behalf_text = on_behalf_text(names.get(by, by), names.get(absent, absent))


def on_behalf_text(by: Any, absent: Any) -> str:
    return _("completed by %(by)s on behalf of %(absent)s") % {"by": by, "absent": absent}
