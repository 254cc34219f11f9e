"""The instance list's "Migrate to another version…" action: a preview page (the plan,
a to-version select, a step-map select per step the selected instances are at) and a
confirm. The engine decides (``plan_migration``, ``migrate_instances``); the permission
is ``permissions.can_migrate_instances``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..engine import get_engine
from ..engine.migration import MigrationPlan
from ..models import WorkflowInstance
from ..permissions import can_migrate_instances
from ..registry import version_key
from ._common import TEMPLATE_DIR, Report, instance_link

MAP_PREFIX = "map__"


class MigrateForm(forms.Form):
    to_version = forms.ChoiceField(label=gettext_lazy("Move to version"))

    def __init__(
        self, *args: Any, versions: list[str], positions: list[str], steps: list[str], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["to_version"].choices = [(v, v) for v in versions]
        self.fields["to_version"].initial = versions[-1]
        for position in positions:
            self.fields[MAP_PREFIX + position] = forms.ChoiceField(
                label=_("Step %(step)s goes to") % {"step": position},
                required=False,
                choices=[("", _("the step of the same name")), *((s, s) for s in steps)],
            )

    def step_map(self) -> dict[str, str]:
        return {
            name.removeprefix(MAP_PREFIX): value
            for name, value in self.cleaned_data.items()
            if name.startswith(MAP_PREFIX) and value
        }


def _positions(instances: list[WorkflowInstance]) -> list[str]:
    names = [s for obj in instances for s in obj.current_steps]
    names += [obj.failed_step for obj in instances if obj.failed_step]
    return list(dict.fromkeys(names))


class MigrateActionMixin:
    """Adds the action to ``WorkflowInstanceAdmin`` (its list's actions)."""

    def has_migrate_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_migrate_instances(request.user)

    @admin.action(description=gettext_lazy("Migrate to another version…"), permissions=["migrate"])
    def migrate_instances(
        self, request: HttpRequest, queryset: QuerySet[WorkflowInstance]
    ) -> HttpResponse | None:
        selected = list(queryset.select_related("definition"))
        workflows = {(obj.definition.name, obj.definition.version) for obj in selected}
        if len(workflows) != 1:
            self.message_user(  # type: ignore[attr-defined]
                request,
                _("Select instances of one workflow version to migrate them."),
                messages.WARNING,
            )
            return None
        ((name, from_version),) = workflows
        engine = get_engine()
        versions = sorted(
            (
                d.version
                for d in engine.registry.list_definitions(all_versions=True)
                if d.name == name and d.version != from_version
            ),
            key=version_key,
        )
        if not versions:
            self.message_user(  # type: ignore[attr-defined]
                request,
                _("%(name)s has no other registered version to migrate to.") % {"name": name},
                messages.WARNING,
            )
            return None
        posted = request.POST.get("post") in ("preview", "yes")
        wanted = request.POST.get("to_version") if posted else None
        to_version = wanted if wanted in versions else versions[-1]
        steps = list(engine.registry.get_definition(name, to_version).steps)
        form = MigrateForm(
            request.POST if posted else None,
            versions=versions,
            positions=_positions(selected),
            steps=steps,
        )
        plan = None
        if form.is_valid() or not posted:
            step_map = form.step_map() if posted else {}
            try:
                plan = engine.plan_migration(
                    name,
                    from_version,
                    form.cleaned_data["to_version"] if posted else to_version,
                    step_map=step_map,
                    instance_ids=[obj.pk for obj in selected],
                )
            except ValidationError as exc:
                if posted:
                    form.add_error(None, exc.messages)
            if plan is not None and request.POST.get("post") == "yes":
                self._migrate(request, plan)
                return None
        return self._migrate_page(request, selected, form, plan, name, from_version)

    def _migrate_page(
        self,
        request: HttpRequest,
        selected: list[WorkflowInstance],
        form: MigrateForm,
        plan: MigrationPlan | None,
        name: str,
        from_version: str,
    ) -> TemplateResponse:
        by_id = {obj.pk: obj for obj in selected}
        rows = [(by_id.get(v.instance_id), v) for v in plan.instances] if plan else []
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": _("Migrate workflow instances"),
            "opts": self.opts,  # type: ignore[attr-defined]
            "form": form,
            "action": "migrate_instances",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "instances": selected,
            "plan": plan,
            "rows": rows,
            "workflow": name,
            "from_version": from_version,
            "media": self.media + form.media,  # type: ignore[attr-defined]
        }
        request.current_app = self.admin_site.name  # type: ignore[attr-defined]
        return TemplateResponse(request, f"{TEMPLATE_DIR}/workflowinstance/migrate.html", context)

    def _migrate(self, request: HttpRequest, plan: MigrationPlan) -> None:
        report = Report(self, request)
        rows = WorkflowInstance.objects.select_related("definition").in_bulk(
            [v.instance_id for v in plan.instances]
        )
        for result in get_engine().migrate_instances(plan):
            obj = rows.get(result.instance_id)
            link = instance_link(obj) if obj is not None else str(result.instance_id)
            if result.migrated:
                if obj is not None:
                    self.log_change(  # type: ignore[attr-defined]
                        request,
                        obj,
                        _("Migrated from %(old)s to %(new)s")
                        % {"old": plan.from_version, "new": plan.to_version},
                    )
                report.add(
                    messages.SUCCESS,
                    format_html(_("{} was migrated to {}."), link, plan.to_version),
                )
            else:
                report.add(
                    messages.WARNING,
                    format_html(_("{} was not migrated: {}"), link, result.reason),
                )
        report.send()
