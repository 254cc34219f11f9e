"""External signals in the admin: a read-only list (pending, consumed, discarded; by
name) and each instance's signals on its page (``signals_context``).

Signals are written only by the engine (``engine.send_signal``): no add, change or
delete here. A user sees the signals of the instances they see
(``permissions.visible_instances``).
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..engine import get_engine
from ..exceptions import WorkflowError
from ..models import WorkflowInstance, WorkflowSignal
from ..permissions import (
    can_view_instance,
    is_active_user,
    sees_every_instance,
    visible_instances,
)
from ._common import badge, compact_json, instance_link, lookup, pretty_json
from .columns import one_line, short_datetime

STATES = {
    "pending": Q(consumed_at__isnull=True, discarded_at__isnull=True),
    "consumed": Q(consumed_at__isnull=False),
    "discarded": Q(discarded_at__isnull=False),
}


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("pending", _("Pending (buffered)")),
            ("consumed", _("Consumed")),
            ("discarded", _("Discarded")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(STATES[value]) if value in STATES else queryset


def signals_context(instance: WorkflowInstance) -> dict[str, Any]:
    """The instance page's signals, oldest first, with the step that consumed each."""
    rows = list(instance.signals.select_related("consumed_by_step_run").order_by("id"))
    for row in rows:
        # One cut line: a signal's data may be up to MAX_CONTEXT_BYTES; its page has it all.
        row.data_html = one_line(compact_json(row.data))  # type: ignore[attr-defined]
    return {"signals": rows}


@admin.register(WorkflowSignal)
class WorkflowSignalAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "instance_display",
        "state_display",
        "data_short",
        "sent_by",
        "sent_display",
        "consumed_display",
    )
    list_filter = (StateFilter, "name")
    list_select_related = ("instance__definition", "sent_by", "consumed_by_step_run")
    list_per_page = 50
    show_full_result_count = False
    ordering = ("-id",)
    search_fields = ("name", "idempotency_key", "instance__business_key")
    fields = (
        "instance_display",
        "name",
        "state_display",
        "data_display",
        "idempotency_key",
        "sent_by",
        "created_at",
        "consumed_at",
        "consumed_display",
        "discarded_at",
    )
    readonly_fields = fields
    actions = ("discard_pending",)

    @admin.action(description=_("Discard the selected pending signals"))
    def discard_pending(self, request: HttpRequest, queryset: QuerySet[WorkflowSignal]) -> None:
        """Each through ``engine.discard_signal`` (its own transition, the signal rule);
        one refusal leaves the others discarded."""
        engine = get_engine()
        done, refused = 0, []
        for signal in queryset.order_by("pk"):
            try:
                engine.discard_signal(signal.pk, by=request.user, reason="discarded in the admin")
            except (PermissionDenied, WorkflowError) as exc:
                refused.append(f"#{signal.pk}: {exc}")
            else:
                done += 1
        if done:
            self.message_user(
                request, _("%(count)d signal(s) discarded.") % {"count": done}, messages.SUCCESS
            )
        for text in refused:
            self.message_user(request, text, messages.WARNING)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # written by the engine only

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The list: anyone (it shows what they may see); a signal: its instance's rule."""
        if obj is None:
            return is_active_user(request.user)
        return can_view_instance(request.user, obj.instance)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowSignal]:
        rows = super().get_queryset(request)
        if sees_every_instance(request.user):
            return rows
        return rows.filter(instance__in=visible_instances(request.user).values("pk"))

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> WorkflowSignal | None:
        # Among all rows: one the user may not see is refused (403), not "deleted".
        rows = WorkflowSignal.objects.select_related("instance__definition")
        return cast("WorkflowSignal | None", lookup(rows, object_id, from_field))

    @admin.display(description=_("instance"))
    def instance_display(self, obj: WorkflowSignal) -> SafeString:
        return instance_link(obj.instance)

    @admin.display(description=_("state"))
    def state_display(self, obj: WorkflowSignal) -> SafeString:
        return badge(obj.state, obj.state)

    @admin.display(description=_("sent"), ordering="created_at")
    def sent_display(self, obj: WorkflowSignal) -> SafeString:
        return short_datetime(obj.created_at)

    @admin.display(description=_("data"))
    def data_short(self, obj: WorkflowSignal) -> SafeString:
        return one_line(compact_json(obj.data))

    @admin.display(description=_("data"))
    def data_display(self, obj: WorkflowSignal) -> SafeString:
        return format_html('<pre class="dwf-pre">{}</pre>', pretty_json(obj.data))

    @admin.display(description=_("consumed by"))
    def consumed_display(self, obj: WorkflowSignal) -> str:
        run = obj.consumed_by_step_run
        return run.step_name if run is not None else "-"
