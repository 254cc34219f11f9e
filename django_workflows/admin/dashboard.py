"""The dashboard: charts of a period and a workflow, read at a glance.

A row of the Workflows section ("Dashboard") like "My tasks (N)": the proxy model
``Dashboard``, whose list URL is the page. It needs ``django_workflows.view_dashboard``
(its one permission; superusers hold it). The numbers come from ``stats.py``: a fixed
number of aggregate statements, whatever the number of rows; the charts are SVG drawn
here (``charts.py``), with a table of their data under each.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import stats
from ..models import Dashboard, DefinitionVersion, WorkflowStatus
from ._common import TEMPLATE_DIR, OnePageAdmin, forbidden
from .charts import Bar, Segment, Series, bar_chart, duration, line_chart

#: The longest period the page shows, in days.
MAX_DAYS = 366
DEFAULT_DAYS = 30


class DashboardForm(forms.Form):
    """The period (local days, both included) and the workflow; GET, validated."""

    start = forms.DateField(label=gettext_lazy("From"), required=False)
    end = forms.DateField(label=gettext_lazy("To"), required=False)
    workflow = forms.ChoiceField(label=gettext_lazy("Workflow"), required=False)

    def __init__(self, data: Any, workflows: dict[str, tuple[int, ...]]) -> None:
        super().__init__(data)
        self.workflows = workflows
        choices = [("", _("All workflows")), *((name, name) for name in workflows)]
        self.fields["workflow"].choices = choices
        for name in ("start", "end"):
            self.fields[name].widget = forms.DateInput(attrs={"type": "date"})

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        today = timezone.localdate()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise ValidationError(_("The period must start before it ends."))
        if (end - start).days + 1 > MAX_DAYS:
            raise ValidationError(
                _("The period is at most %(days)d days long.") % {"days": MAX_DAYS}
            )
        data["start"], data["end"] = start, end
        return data

    def scope(self) -> stats.Scope:
        data = self.cleaned_data
        ids = self.workflows.get(data["workflow"]) if data.get("workflow") else None
        return stats.Scope(data["start"], data["end"], ids)


@admin.register(Dashboard)
class DashboardAdmin(OnePageAdmin):
    """One page, the row's link; ``view_dashboard`` (Django's own permission check)."""

    page_view = "dashboard_view"

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            return forbidden(
                request,
                self.admin_site,
                _("The dashboard needs the permission django_workflows.view_dashboard."),
            )
        workflows = stats.workflow_names(DefinitionVersion.objects.values_list("pk", "name"))
        form = DashboardForm(request.GET, workflows)
        scope = form.scope() if form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Dashboard"),
            "form": form,
            "has_view_permission": True,
        }
        if scope is not None:
            context.update(charts(scope, timezone.now(), workflows))
        request.current_app = self.admin_site.name
        return TemplateResponse(request, f"{TEMPLATE_DIR}/dashboard.html", context)


def failed_instances_url(scope: stats.Scope, ids: tuple[int, ...], step: str) -> str:
    """The instance list filtered to the failed instances of ``step`` in the period."""
    query = {
        "status__exact": WorkflowStatus.FAILED,
        "failed_step": step,
        "definition__in": ",".join(str(pk) for pk in ids),
        "finished_at__gte": scope.since.isoformat(),
        "finished_at__lt": scope.until.isoformat(),
    }
    return f"{reverse('admin:django_workflows_workflowinstance_changelist')}?{urlencode(query)}"


def charts(
    scope: stats.Scope, now: datetime, workflows: dict[str, tuple[int, ...]]
) -> dict[str, Any]:
    """The page's charts and their tables (``workflows``: the definition ids of each
    workflow name, for the links): nine statements."""
    labels = [date_format(day, "M j") for day in scope.days]
    per_day = stats.instances_per_day(scope)
    names = {
        "started": _("started"),
        "completed": _("completed"),
        "failed": _("failed"),
        "canceled": _("canceled"),
    }
    series = [
        Series(names[key], stats.fill_days(scope, values), f"dwf-s-{key}")
        for key, values in per_day.items()
    ]
    totals = {key: sum(values.values()) for key, values in per_day.items()}

    slow = stats.slowest_steps(scope)
    slow_chart = bar_chart(
        _("The slowest machine steps, p50 and p95 duration"),
        [
            Bar(
                f"{t.step} ({t.workflow})",
                [
                    Segment(t.p95, "dwf-s-p95", f"{t.step}: p95 {duration(t.p95)}"),
                    Segment(t.p50, "dwf-s-p50", f"{t.step}: p50 {duration(t.p50)}"),
                ],
                note=f"{duration(t.p50)} · {duration(t.p95)}",
            )
            for t in slow
        ],
        legend=[("p50", "dwf-s-p50"), ("p95", "dwf-s-p95")],
        fmt=duration,
        overlay=True,
    )

    failing = stats.failing_steps(scope)
    failing_rows = []
    for f in failing:
        ids = workflows.get(f.workflow, ())
        url = failed_instances_url(scope, ids, f.step) if f.failed_instances else ""
        failing_rows.append((f, url))
    failing_chart = bar_chart(
        _("The steps that fail most: runs failed in the period"),
        [
            Bar(
                f"{f.step} ({f.workflow})",
                [Segment(f.failed_runs, "dwf-s-failed", f"{f.step}: {f.failed_runs} failed")],
                note=_("%(count)d failed instances →") % {"count": f.failed_instances}
                if url
                else "",
                href=url,
                note_css="dwf-s-failed-text",
            )
            for f, url in failing_rows
        ],
    )

    waiting = stats.waiting_tasks(scope, now)
    ages = [label for label, _lower in stats.AGE_BUCKETS]
    no_group = _("(no group)")
    waiting_chart = bar_chart(
        _("Human tasks waiting now, by group and age"),
        [
            Bar(
                g.group or no_group,
                [
                    Segment(n, f"dwf-s-age{i}", f"{g.group or no_group}: {n} waiting {ages[i]}")
                    for i, n in enumerate(g.by_age)
                ],
                note=_("%(count)d overdue") % {"count": g.overdue} if g.overdue else "",
                note_css="dwf-s-overdue-text",
            )
            for g in waiting
        ],
        legend=[(label, f"dwf-s-age{i}") for i, label in enumerate(ages)],
    )
    overdue = stats.overdue_tasks(scope, now)

    backlog = stats.worker_backlog(scope, now)
    delays = stats.queue_delay_per_day(scope)
    delay_series = [
        Series(
            f"p{p}",
            [d.values[p] if d else None for d in stats.fill_days(scope, delays, None)],
            f"dwf-s-p{p}",
        )
        for p in stats.PERCENTILES
    ]
    return {
        "scope": scope,
        "totals": totals,
        "per_day_chart": line_chart(_("Instances per day"), labels, series),
        "per_day_rows": list(zip(labels, *(s.values for s in series), strict=True)),
        "series_names": [s.label for s in series],
        "slow": slow,
        "slow_chart": slow_chart,
        "failing_rows": failing_rows,
        "failing_chart": failing_chart,
        "waiting": waiting,
        "ages": ages,
        "waiting_chart": waiting_chart,
        "waiting_total": sum(g.total for g in waiting),
        "overdue": overdue,
        "backlog": backlog,
        "oldest_ready_age": duration((now - backlog.oldest_ready).total_seconds() * 1000)
        if backlog.oldest_ready
        else "",
        "delay_chart": line_chart(
            _("Queue delay per day (runnable → started)"), labels, delay_series, fmt=duration
        ),
        "delay_rows": [
            (label, delays.get(day)) for label, day in zip(labels, scope.days, strict=True)
        ],
    }
