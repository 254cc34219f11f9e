"""Serializers: read-only ones for rows, and one input serializer per action.

No serializer writes a row: the views hand validated input to the engine.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import (
    Comment,
    HumanTask,
    StepRun,
    StepRunStatus,
    StepTypeChoices,
    TaskStatus,
    WorkflowEvent,
    WorkflowInstance,
    WorkflowStatus,
)
from .schema import EnumField


def _reject_nul(value: Any, path: str = "data") -> None:
    """PostgreSQL stores no NUL character in text or JSON: refuse it up front."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(f"{path}: text may not contain NUL characters.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, path)
            _reject_nul(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_nul(item, f"{path}[{index}]")


class JSONObjectField(serializers.DictField):
    """A JSON object with any values (what a workflow context holds)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        _reject_nul(data, self.field_name or "data")
        return dict(data)


# -- errors -------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """The body of every error response."""

    detail = serializers.CharField(help_text="What went wrong, for people.")
    code = serializers.CharField(
        help_text="What went wrong, for programs: `invalid`, `not_authenticated`, "
        "`authentication_failed`, `permission_denied`, `not_found`, `conflict`, "
        "`task_not_open`, `definition_error`, `parse_error`, ..."
    )
    errors = serializers.DictField(
        required=False,
        help_text="On 400 `invalid`: the messages of each invalid field "
        "(`non_field_errors` for the others).",
    )


# -- definitions ----------------------------------------------------------------


class DefinitionVersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    registered = serializers.BooleanField(
        help_text="Registered in this process: it can be started and its instances can run."
    )
    stored = serializers.BooleanField(help_text="Stored in the database (it has been started).")
    description = serializers.CharField()


class DefinitionVersionDetailSerializer(DefinitionVersionSerializer):
    graph = serializers.DictField(help_text="Steps and edges of this version.")


class DefinitionSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    latest_version = serializers.CharField(
        help_text="The version a start without `version` runs (the highest registered one)."
    )
    registered = serializers.BooleanField(help_text="Some version is registered.")
    versions = DefinitionVersionSerializer(many=True, help_text="Lowest version first.")
    graph = serializers.DictField(help_text="Steps and edges of the latest version.")


class DefinitionDetailSerializer(DefinitionSerializer):
    versions = DefinitionVersionDetailSerializer(many=True, help_text="Lowest version first.")


# -- instances ----------------------------------------------------------------------


class StepRunSerializer(serializers.ModelSerializer):
    status = EnumField(StepRunStatus, read_only=True)
    step_type = EnumField(StepTypeChoices, read_only=True)

    class Meta:
        model = StepRun
        fields = (
            "id",
            "step_name",
            "step_type",
            "status",
            "attempt",
            "max_attempts",
            "error",
            "due_at",
            "created_at",
            "started_at",
            "finished_at",
        )
        read_only_fields = fields


class EventSerializer(serializers.ModelSerializer):
    payload = serializers.DictField(read_only=True)

    class Meta:
        model = WorkflowEvent
        fields = ("id", "type", "step_name", "payload", "created_at")
        read_only_fields = fields


class TaskSerializer(serializers.ModelSerializer):
    workflow = serializers.CharField(source="instance.definition.name", read_only=True)
    version = serializers.CharField(source="instance.definition.version", read_only=True)
    status = EnumField(TaskStatus, read_only=True)
    candidate_groups = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    result = serializers.DictField(read_only=True)

    class Meta:
        model = HumanTask
        fields = (
            "id",
            "instance",
            "workflow",
            "version",
            "step_name",
            "title",
            "summary",
            "description",
            "status",
            "assignee",
            "candidate_groups",
            "claimed_by",
            "due_at",
            "completed_by",
            "completed_on_behalf_of",
            "completed_at",
            "result",
            "slot",
            "close_reason",
            "created_at",
        )
        read_only_fields = fields


class CompletionSerializer(serializers.Serializer):
    rule = serializers.JSONField(help_text='The step\'s `completion`: "all", "any" or a number.')
    needed = serializers.IntegerField(help_text="The completions that decide the step.")
    completed = serializers.IntegerField(help_text="Its tasks completed so far.")
    open = serializers.IntegerField(help_text="Its tasks still open.")
    canceled = serializers.IntegerField(
        help_text="Its tasks canceled once the step was decided (see `close_reason`)."
    )


class DisplayFieldSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The context key.")
    label = serializers.CharField(help_text="Its label.")
    value = serializers.JSONField(allow_null=True, help_text="Its value (null if unset).")


class TaskDetailSerializer(TaskSerializer):
    """A task with what a client needs to render and submit it."""

    context = serializers.DictField(
        source="instance.context", read_only=True, help_text="The instance's data."
    )
    form_schema = serializers.DictField(
        read_only=True,
        allow_null=True,
        help_text="JSON schema of the data `complete` accepts (null: the workflow "
        "definition is not registered).",
    )
    actions = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Names of the step's buttons, for `complete`'s `action`.",
    )
    action_schemas = serializers.DictField(
        child=serializers.DictField(),
        read_only=True,
        help_text="For each action, the JSON schema of the data `complete` accepts with it "
        "(an action may have a form of its own: a Reject that asks only for comments).",
    )
    display = DisplayFieldSerializer(
        many=True,
        read_only=True,
        help_text="The context values the step shows to whoever completes the task, in "
        "order, with their labels (the step's `display_fields`).",
    )
    can_complete = serializers.BooleanField(
        read_only=True, help_text="Whether you may complete (or claim) the task."
    )
    completion = CompletionSerializer(
        read_only=True,
        allow_null=True,
        help_text="For a step with `assignees` (one task each): how far the step is, e.g. 2 "
        "of 3 needed answers in; null for a one-task step.",
    )

    class Meta(TaskSerializer.Meta):
        fields = (
            *TaskSerializer.Meta.fields,
            "context",
            "form_schema",
            "actions",
            "action_schemas",
            "display",
            "can_complete",
            "completion",
        )
        read_only_fields = fields


class InstanceSerializer(serializers.ModelSerializer):
    workflow = serializers.CharField(source="definition.name", read_only=True)
    version = serializers.CharField(source="definition.version", read_only=True)
    status = EnumField(WorkflowStatus, read_only=True)
    current_steps = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = WorkflowInstance
        fields = (
            "id",
            "workflow",
            "version",
            "status",
            "business_key",
            "started_by",
            "current_steps",
            "failed_step",
            "error",
            "started_at",
            "updated_at",
            "finished_at",
        )
        read_only_fields = fields


class ChildSerializer(serializers.ModelSerializer):
    """A sub-workflow instance a step of this one started."""

    workflow = serializers.CharField(source="definition.name", read_only=True)
    status = EnumField(WorkflowStatus, read_only=True)
    step_name = serializers.SerializerMethodField(help_text="The parent's step that started it.")
    item = serializers.IntegerField(
        source="parent_item", read_only=True, help_text="Its item's index (for_each), else 0."
    )

    class Meta:
        model = WorkflowInstance
        fields = ("id", "workflow", "status", "step_name", "item")
        read_only_fields = fields

    def get_step_name(self, obj: WorkflowInstance) -> str:
        run = obj.parent_step_run
        return run.step_name if run is not None else ""


class InstanceDetailSerializer(InstanceSerializer):
    parent = serializers.UUIDField(
        source="parent_id",
        read_only=True,
        allow_null=True,
        help_text="The instance whose sub-workflow step started this one, or null.",
    )
    children = ChildSerializer(
        many=True, read_only=True, help_text="The sub-workflows it started, oldest first."
    )
    context = serializers.DictField(read_only=True)
    step_runs = StepRunSerializer(many=True, read_only=True)
    open_tasks = TaskSerializer(many=True, read_only=True)
    events = EventSerializer(many=True, read_only=True, help_text="The history, oldest first.")

    class Meta(InstanceSerializer.Meta):
        fields = (
            *InstanceSerializer.Meta.fields,
            "parent",
            "children",
            "context",
            "step_runs",
            "open_tasks",
            "events",
        )
        read_only_fields = fields


# -- input of actions -------------------------------------------------------------


class StartSerializer(serializers.Serializer):
    workflow = serializers.CharField(
        min_length=1, max_length=200, help_text="Name of a registered workflow."
    )
    version = serializers.CharField(
        min_length=1,
        max_length=50,
        required=False,
        help_text="Default: the highest registered version.",
    )
    data = JSONObjectField(
        required=False, default=dict, help_text="The initial context (a JSON object)."
    )
    business_key = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="Your reference (an order number...). Starting the same workflow again "
        "with a business key you already used returns the first instance (200).",
    )


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, default="", help_text="Kept in history."
    )


class ReassignSerializer(serializers.Serializer):
    to = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="The id of the new assignee."
    )
    groups = serializers.ListField(
        child=serializers.CharField(max_length=150),
        required=False,
        allow_empty=False,
        max_length=50,
        help_text="Or: the names of the groups the task is offered to instead.",
    )
    reason = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, default="", help_text="Kept in history."
    )

    def validate(self, attrs: dict) -> dict:
        if (attrs.get("to") is None) == (not attrs.get("groups")):
            raise serializers.ValidationError("give either `to` (a user id) or `groups`")
        return attrs


class RetrySerializer(serializers.Serializer):
    from_step = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="Step to re-run from; default: the step that failed.",
    )


class CompleteSerializer(serializers.Serializer):
    data = JSONObjectField(
        required=False, default=dict, help_text="The form's values (see the task's form_schema)."
    )
    action = serializers.CharField(
        min_length=1,
        max_length=200,
        required=False,
        allow_null=True,
        default=None,
        help_text="One of the task's `actions`: its values are merged into `data`.",
    )
    comment = serializers.CharField(
        max_length=10_000,
        required=False,
        allow_blank=True,
        default="",
        help_text="Stored with the completion as a comment on the task; required for "
        "the actions the step's `comment_required` names.",
    )


# -- comments and bulk approval -------------------------------------------------------


class CommentSerializer(serializers.ModelSerializer):
    author_name = serializers.SerializerMethodField()
    attachment = serializers.FileField(
        read_only=True, allow_null=True, help_text="The file's URL, or null."
    )

    class Meta:
        model = Comment
        fields = (
            "id",
            "instance",
            "task",
            "author",
            "author_name",
            "text",
            "attachment",
            "created_at",
        )
        read_only_fields = fields

    def get_author_name(self, comment: Comment) -> str:
        return comment.author.get_username() if comment.author is not None else ""


@extend_schema_field({"type": "string", "format": "binary"})
class UploadField(serializers.FileField):
    """A file sent in a multipart request (binary in the schema, not a URL)."""


class CommentInputSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=10_000, help_text="1 to 10,000 characters.")
    attachment = UploadField(
        required=False,
        allow_empty_file=False,
        help_text="Optional (send multipart/form-data); at most `MAX_COMMENT_ATTACHMENT_BYTES`.",
    )

    def validate_text(self, value: str) -> str:
        _reject_nul(value, "text")
        return value


class BulkCompleteSerializer(CompleteSerializer):
    task_ids = serializers.ListField(
        child=serializers.IntegerField(),
        allow_empty=False,
        max_length=500,
        help_text="The tasks to complete the same way (at most 500; a repeated id counts once).",
    )


class TaskCompletionSerializer(serializers.Serializer):
    task_id = serializers.IntegerField()
    completed = serializers.BooleanField()
    code = serializers.CharField(
        help_text="`completed`, `not_found`, `permission_denied`, `invalid` or `conflict`."
    )
    reason = serializers.CharField(help_text="Why it was refused; empty when completed.")
    instance_id = serializers.UUIDField(allow_null=True)


class BulkResultSerializer(serializers.Serializer):
    completed = serializers.IntegerField(help_text="How many tasks this call completed.")
    refused = serializers.IntegerField(help_text="How many it did not.")
    results = TaskCompletionSerializer(many=True, help_text="One per task, in the order sent.")
