"""Rows the engine reads and writes. No workflow logic lives here: the engine owns transitions."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .people_models import Comment, Substitution  # noqa: F401 (kept apart for size)
from .signal_models import WorkflowSignal  # noqa: F401 (this app's model, kept apart)


class WorkflowStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    WAITING = "waiting", _("Waiting")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Canceled")


class StepRunStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")  # runnable (at due_at, if set)
    RUNNING = "running", _("Running")  # claimed under a lease
    WAITING = "waiting", _("Waiting")  # a human task is open
    SCHEDULED = "scheduled", _("Scheduled")  # a timer, due at due_at
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Canceled")


class StepTypeChoices(models.TextChoices):
    MACHINE = "machine", _("Machine")
    HUMAN = "human", _("Human")
    GATEWAY = "gateway", _("Gateway")
    TIMER = "timer", _("Timer")
    SIGNAL = "signal", _("Signal")
    SUBWORKFLOW = "subworkflow", _("Sub-workflow")


class TaskStatus(models.TextChoices):
    OPEN = "open", _("Open")
    COMPLETED = "completed", _("Completed")
    CANCELED = "canceled", _("Canceled")


ACTIVE_INSTANCE_STATUSES = (WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.WAITING)
ACTIVE_RUN_STATUSES = (
    StepRunStatus.QUEUED,
    StepRunStatus.RUNNING,
    StepRunStatus.WAITING,
    StepRunStatus.SCHEDULED,
)
TIMEOUT_ARMED = Q(timeout_at__isnull=False, status__in=("waiting", "scheduled"))  # waits, timed


def _status_check(name: str, choices: type[models.TextChoices]) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(status__in=choices.values), name=name)


def _child_link(to: str, name: Any) -> Any:
    return models.ForeignKey(
        to, models.SET_NULL, null=True, blank=True, related_name="children", verbose_name=name
    )


class DefinitionVersion(models.Model):
    """A registered workflow version as stored: its graph is immutable once written."""

    name = models.CharField(_("name"), max_length=200)
    version = models.CharField(_("version"), max_length=50)
    description = models.TextField(_("description"), blank=True)
    graph = models.JSONField(_("graph"), help_text=_("Steps and edges as registered."))
    checksum = models.CharField(_("checksum"), max_length=64, help_text=_("sha256 of the graph."))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("workflow definition version")
        verbose_name_plural = _("workflow definition versions")
        ordering = ("name", "version")
        constraints = [
            models.UniqueConstraint(fields=("name", "version"), name="dwf_definition_name_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class WorkflowInstance(models.Model):
    """One run of a workflow definition."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    definition = models.ForeignKey(
        DefinitionVersion,
        on_delete=models.PROTECT,
        related_name="instances",
        verbose_name=_("definition"),
        db_index=False,  # dwf_instance_definition (definition, status) serves its look-ups
    )
    status = models.CharField(
        _("status"), max_length=20, choices=WorkflowStatus.choices, default=WorkflowStatus.PENDING
    )
    context = models.JSONField(_("context"), default=dict, blank=True)
    current_steps = models.JSONField(
        _("current steps"),
        default=list,
        blank=True,
        help_text=_("Names of the steps queued, running, waiting or scheduled."),
    )
    tokens = models.JSONField(
        _("join tokens"),
        default=dict,
        blank=True,
        help_text=_("Tokens waiting at joins: {step: {source: live}}. Engine-internal."),
    )
    business_key = models.CharField(_("business key"), max_length=200, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="started_workflows",
        verbose_name=_("started by"),
    )
    failed_step = models.CharField(_("failed step"), max_length=200, blank=True)
    error = models.TextField(_("error"), blank=True)
    error_traceback = models.TextField(_("error traceback"), blank=True)
    started_at = models.DateTimeField(_("started at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # A SubWorkflowStep's child: its parent, the parent's run waiting for it, its item.
    parent = _child_link("self", _("parent instance"))
    parent_step_run = _child_link("StepRun", _("parent step run"))
    parent_item = models.PositiveIntegerField(_("item index"), null=True, blank=True)

    class Meta:
        verbose_name = _("workflow instance")
        verbose_name_plural = _("workflow instances")
        ordering = ("-started_at",)
        indexes = [
            models.Index(fields=("status", "-started_at"), name="dwf_instance_status"),
            models.Index(fields=("definition", "status"), name="dwf_instance_definition"),
            models.Index(fields=("-started_at",), name="dwf_instance_started"),
            models.Index(fields=("business_key",), name="dwf_instance_business_key"),
            # Retention's query: finished instances, oldest first (only those have it).
            models.Index(
                fields=("finished_at", "id"),
                condition=Q(finished_at__isnull=False),
                name="dwf_instance_finished",
            ),
            # The dashboard's finished per day and failing steps, over a period.
            models.Index(
                fields=("finished_at", "status"),  # covers the count per day and status
                condition=Q(finished_at__isnull=False),
                name="dwf_instance_finished_status",
            ),
        ]
        constraints = [
            _status_check("dwf_instance_status_valid", WorkflowStatus),
            models.UniqueConstraint(  # one child per item of a parent's run
                fields=("parent_step_run", "parent_item"), name="dwf_instance_one_child"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.definition_id and self.definition} #{self.pk}"

    @property
    def current_step(self) -> str | None:
        """The first active step (the only one unless parallel branches are open)."""
        return self.current_steps[0] if self.current_steps else None

    @property
    def workflow_name(self) -> str:
        return self.definition.name

    @property
    def is_finished(self) -> bool:
        return self.status in (
            WorkflowStatus.COMPLETED,
            WorkflowStatus.FAILED,
            WorkflowStatus.CANCELED,
        )


class StepRun(models.Model):
    """One activation of a step in an instance; a retried attempt reuses the row."""

    instance = models.ForeignKey(
        WorkflowInstance,
        on_delete=models.CASCADE,
        related_name="step_runs",
        verbose_name=_("instance"),
        db_index=False,  # dwf_run_instance_status (instance, status) serves its look-ups
    )
    step_name = models.CharField(_("step"), max_length=200)
    step_type = models.CharField(_("type"), max_length=20, choices=StepTypeChoices.choices)
    status = models.CharField(_("status"), max_length=20, choices=StepRunStatus.choices)
    attempt = models.PositiveIntegerField(
        _("attempt"), default=0, help_text=_("Claims so far; counted when a worker takes the run.")
    )
    max_attempts = models.PositiveIntegerField(
        _("max attempts"),
        default=1,
        help_text=_("The step's RetryPolicy.max_attempts, as last applied by a worker."),
    )
    crashes = models.PositiveIntegerField(
        _("crashes"),
        default=0,
        help_text=_(
            "Claims whose worker died before it finished (lease expired). Counted apart "
            "from the step's own failures: a crash re-runs the step up to CRASH_LIMIT times."
        ),
    )
    lease_token = models.UUIDField(_("lease token"), null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    worker = models.CharField(_("worker"), max_length=200, blank=True)
    due_at = models.DateTimeField(
        _("due at"), null=True, blank=True, help_text=_("Timer due time, or the next retry.")
    )
    timeout_at = models.DateTimeField(_("timeout at"), null=True, blank=True)  # timeout edge
    queued_at = models.DateTimeField(
        _("queued at"),
        null=True,
        blank=True,
        help_text=_("When it last became runnable; the sweep re-sends runs queued too long."),
    )
    input = models.JSONField(
        _("input"), null=True, blank=True, help_text=_("The context the last attempt started with.")
    )
    changes = models.JSONField(
        _("context changes"), default=dict, blank=True, help_text=_("What the step set.")
    )
    error = models.TextField(_("error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("step run")
        verbose_name_plural = _("step runs")
        ordering = ("id",)
        indexes = [
            models.Index(fields=("instance", "status"), name="dwf_run_instance_status"),
            # The claim / recovery sweep / timer queries, each matched by a partial index.
            models.Index(fields=("due_at",), condition=Q(status="queued"), name="dwf_run_queued"),
            models.Index(
                fields=("queued_at",), condition=Q(status="queued"), name="dwf_run_queued_at"
            ),
            models.Index(
                fields=("lease_expires_at",),
                condition=Q(status="running"),
                name="dwf_run_lease",
            ),
            models.Index(
                fields=("due_at",), condition=Q(status="scheduled"), name="dwf_run_timer_due"
            ),
            models.Index(fields=("timeout_at",), condition=TIMEOUT_ARMED, name="dwf_run_timeout"),
            # The dashboard's durations, failures and queue delay over a period.
            models.Index(
                fields=("finished_at",),
                condition=Q(finished_at__isnull=False),
                name="dwf_run_finished",
            ),
            models.Index(  # status first: SQLite's planner then prefers it to the above
                fields=("status", "finished_at"),
                condition=Q(status="failed"),
                name="dwf_run_failed",
            ),
        ]
        constraints = [
            _status_check("dwf_run_status_valid", StepRunStatus),
            models.CheckConstraint(
                condition=Q(step_type__in=StepTypeChoices.values), name="dwf_run_type_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step_name} ({self.get_status_display()})"

    @property
    def tries(self) -> int:
        """Attempts that count against ``max_attempts``: the claims whose worker did not
        crash (a crash is counted apart, in ``crashes``)."""
        return self.attempt - self.crashes

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class HumanTask(models.Model):
    """Work for a person: an approval or a form to fill in, completed through the engine."""

    instance = models.ForeignKey(
        WorkflowInstance,
        on_delete=models.CASCADE,
        related_name="human_tasks",
        verbose_name=_("instance"),
        db_index=False,  # dwf_task_instance (instance, step_name, status) serves its look-ups
    )
    step_run = models.ForeignKey(
        StepRun, on_delete=models.CASCADE, related_name="human_tasks", verbose_name=_("step run")
    )
    step_name = models.CharField(_("step"), max_length=200)
    title = models.CharField(_("title"), max_length=300)
    summary = models.CharField(
        _("summary"),
        max_length=300,
        blank=True,
        help_text=_("What identifies the task at a glance (the step's summary)."),
    )
    description = models.TextField(_("description"), blank=True)
    status = models.CharField(
        _("status"), max_length=20, choices=TaskStatus.choices, default=TaskStatus.OPEN
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="workflow_tasks",
        verbose_name=_("assignee"),
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="claimed_workflow_tasks",
        verbose_name=_("claimed by"),
    )
    due_at = models.DateTimeField(_("due at"), null=True, blank=True)
    # Deadlines that act (the step's remind_every / escalate_after): the sweep reads only
    # open tasks, so completing or canceling a task disarms them.
    remind_at = models.DateTimeField(
        _("next reminder at"),
        null=True,
        blank=True,
        help_text=_("When the sweep sends the next reminder (the step's remind_every)."),
    )
    reminders_sent = models.PositiveIntegerField(
        _("reminders sent"), default=0, help_text=_("HumanTaskReminder events so far.")
    )
    escalate_at = models.DateTimeField(
        _("escalates at"),
        null=True,
        blank=True,
        help_text=_("When the sweep moves the task to the escalation groups; blank once done."),
    )
    escalated_at = models.DateTimeField(_("escalated at"), null=True, blank=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="completed_workflow_tasks",
        verbose_name=_("completed by"),
    )
    completed_on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="substituted_workflow_tasks",
        verbose_name=_("completed on behalf of"),
        help_text=_("The absent user whose substitute completed the task; empty otherwise."),
    )
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    result = models.JSONField(_("result"), default=dict, blank=True)
    slot = models.PositiveSmallIntegerField(
        _("slot"),
        default=0,
        help_text=_("Which of its step's assignees the task is for (0 without assignees)."),
    )
    close_reason = models.CharField(
        _("close reason"),
        max_length=100,
        blank=True,
        help_text=_('Why it was canceled: "completion reached", "vetoed"; blank otherwise.'),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("human task")
        verbose_name_plural = _("human tasks")
        ordering = ("-created_at",)
        permissions = [
            ("complete_any_task", _("Can complete any human task, whoever it is for")),
            ("reassign_any_task", _("Can reassign any human task to someone else")),
        ]
        indexes = [
            models.Index(fields=("instance", "step_name", "status"), name="dwf_task_instance"),
            # The list pages' orders, so a page reads 50 index entries, not every task:
            # the API and the admin changelist, the inboxes (open tasks; the admin's is
            # due first, and ascending puts NULLs last on PostgreSQL as the page does).
            models.Index(fields=("-created_at", "-id"), name="dwf_task_created"),
            models.Index(
                fields=("-created_at", "-id"),
                condition=Q(status="open"),
                name="dwf_task_open_created",
            ),
            models.Index(
                fields=("due_at", "created_at", "id"),
                condition=Q(status="open"),
                name="dwf_task_open_due",
            ),
            # The sweep's queries: open tasks whose next reminder / escalation is due.
            models.Index(fields=("remind_at",), condition=Q(status="open"), name="dwf_task_remind"),
            models.Index(
                fields=("escalate_at",), condition=Q(status="open"), name="dwf_task_escalate"
            ),
        ]
        constraints = [
            _status_check("dwf_task_status_valid", TaskStatus),
            # One open task per step run, or per assignee of a step with ``assignees``.
            models.UniqueConstraint(
                fields=("step_run", "slot"),
                condition=Q(status="open"),
                name="dwf_task_one_open_per_slot",
            ),
        ]

    def __str__(self) -> str:
        return self.title


class MyTask(HumanTask):
    """No table of its own: the admin's "My tasks (N)" row, a link to the inbox on the
    admin index, the app index and the navigation sidebar. It has no permission."""

    class Meta:
        proxy = True
        default_permissions = ()
        verbose_name = _("my task")
        verbose_name_plural = _("my tasks")


class Dashboard(WorkflowInstance):
    """No table of its own: the admin's "Dashboard" row and its one permission,
    ``django_workflows.view_dashboard`` (see ``admin/dashboard.py``)."""

    class Meta:
        proxy = True
        default_permissions = ("view",)
        verbose_name = _("dashboard")
        verbose_name_plural = _("dashboard")


class HumanTaskGroup(models.Model):
    """A candidate group of a task, by its name: its members (whenever the group is
    created) may complete the task. A name that matches no group lets nobody in."""

    task = models.ForeignKey(
        HumanTask,
        on_delete=models.CASCADE,
        related_name="candidate_groups",
        verbose_name=_("task"),
    )
    name = models.CharField(
        _("group name"), max_length=150, help_text=_("The name of an auth group (auth.Group).")
    )

    class Meta:
        verbose_name = _("candidate group")
        verbose_name_plural = _("candidate groups")
        ordering = ("task", "name")
        constraints = [
            # Also the index of the inbox's probe: (this task, one of the user's groups).
            models.UniqueConstraint(fields=("task", "name"), name="dwf_task_group_unique"),
        ]
        indexes = [models.Index(fields=("name", "task"), name="dwf_task_group_name")]

    def __str__(self) -> str:
        return self.name


class WorkflowEvent(models.Model):
    """The execution history of an instance, one row per event, in order of ``id``."""

    instance = models.ForeignKey(
        WorkflowInstance,
        on_delete=models.CASCADE,
        related_name="events",
        verbose_name=_("instance"),
        db_index=False,  # dwf_event_instance (instance, id) serves its look-ups
    )
    type = models.CharField(_("type"), max_length=50)
    step_name = models.CharField(_("step"), max_length=200, blank=True)
    payload = models.JSONField(_("payload"), default=dict, blank=True)
    created_at = models.DateTimeField(_("time"))

    class Meta:
        verbose_name = _("workflow event")
        verbose_name_plural = _("workflow events")
        ordering = ("id",)
        indexes = [models.Index(fields=("instance", "id"), name="dwf_event_instance")]

    def __str__(self) -> str:
        return f"{self.type} {self.step_name}".strip()


class IdempotencyKey(models.Model):
    """A client's key for a start request: the same key (for the same user) returns the
    instance the first request started instead of starting another one."""

    key = models.CharField(_("key"), max_length=255)
    owner = models.CharField(
        _("owner"), max_length=150, blank=True, help_text=_("The user's pk; blank for none.")
    )
    workflow_name = models.CharField(_("workflow"), max_length=200)
    instance = models.ForeignKey(
        WorkflowInstance,
        on_delete=models.CASCADE,
        related_name="idempotency_keys",
        verbose_name=_("instance"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("idempotency key")
        verbose_name_plural = _("idempotency keys")
        constraints = [
            models.UniqueConstraint(fields=("owner", "key"), name="dwf_idempotency_owner_key"),
        ]

    def __str__(self) -> str:
        return self.key


# Imported here so that the app's models module holds every model (the row lives apart).
from .sweeper_models import SweeperLease  # noqa: E402, F401
